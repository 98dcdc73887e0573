"""The link runtime every operator protocol shares (SMPP, CMPP): `link` (one connection),
`session` (one login kept up), `pool` (the carrier side), `pacing`, and `dialect` (what a
protocol must say for the runtime to carry it)."""
