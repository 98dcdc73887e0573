"""SMSGW_WORKERS and what each worker gets of the gateway's limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from smsgw.carriers import open_carrier
from smsgw.carriers.sim import SimCarrier
from smsgw.carriers.smpp.carrier import SmppCarrier
from smsgw.config import ConfigError, Endpoint, available_cores, load_config
from smsgw.shares import ALONE, Share, worker_config


@pytest.mark.parametrize(
    ("total", "count", "parts"),
    [(3, 2, [2, 1]), (4, 2, [2, 2]), (1, 1, [1]), (5, 3, [2, 2, 1]), (2, 3, [1, 1, 0])],
)
def test_whole_things_are_divided_with_nothing_lost(
    total: int, count: int, parts: list[int]
) -> None:
    assert [Share(index, count).of(total) for index in range(count)] == parts


def test_a_share_is_one_of_the_workers() -> None:
    assert ALONE.first and ALONE.of(7) == 7 and ALONE.rate(2.5) == 2.5
    assert Share(1, 2).name == "worker 2" and not Share(1, 2).first
    with pytest.raises(ValueError):
        Share(2, 2)


def test_workers_setting() -> None:
    assert load_config({}).workers == 1
    assert load_config({"SMSGW_WORKERS": "4"}).workers == 4
    assert load_config({"SMSGW_WORKERS": "auto"}).workers == available_cores()
    for bad in ("0", "-1", "two", "1.5", "100000"):
        with pytest.raises(ConfigError) as error:
            load_config({"SMSGW_WORKERS": bad})
        assert error.value.variable == "SMSGW_WORKERS"


def test_workers_need_a_bind_each() -> None:
    smpp = "smpp://esme:pw@127.0.0.1:2775?binds=2"
    assert load_config({"SMSGW_WORKERS": "2", "SMSGW_CARRIER": smpp}).workers == 2
    with pytest.raises(ConfigError) as error:
        load_config({"SMSGW_WORKERS": "3", "SMSGW_CARRIER": smpp})
    assert error.value.variable == "SMSGW_WORKERS"
    assert "binds=2" in str(error.value)
    one_bind = {"SMSGW_WORKERS": "auto", "SMSGW_CARRIER": "smpp://esme:pw@127.0.0.1:2775"}
    assert load_config(one_bind).workers == 1  # auto: as many as the binds allow


def test_a_worker_config_has_the_port_no_metrics_and_its_share_of_the_limits(
    tmp_path: Path,
) -> None:
    apps = tmp_path / "apps.toml"
    apps.write_text('[apps.fast]\nsecret = "s"\ntps = 100\n[apps.free]\nsecret = "t"\n')
    config = load_config(
        {
            "SMSGW_APPS_FILE": str(apps),
            "SMSGW_LISTEN": "127.0.0.1:0",
            "SMSGW_METRICS": "127.0.0.1:0",
            "SMSGW_WORKERS": "4",
            "SMSGW_MAX_CONNECTIONS": "1026",
            "SMSGW_AUTH_FAIL_LIMIT": "2",
        }
    )
    mine = worker_config(config, Share(3, 4), 4321)
    assert mine.listen == Endpoint("127.0.0.1", 4321)
    assert mine.metrics is None
    assert {app.appid: app.tps for app in mine.apps} == {"fast": 25.0, "free": None}
    assert mine.max_connections == 256  # 257, 257, 256, 256
    assert mine.auth_fail_limit == 1  # never 0: that would refuse every address


def test_carriers_get_their_share() -> None:
    sim = open_carrier("sim://?tps=90", share=Share(0, 3))
    assert isinstance(sim, SimCarrier) and sim.config.tps == 30
    unlimited = open_carrier("sim://", share=Share(0, 3))
    assert isinstance(unlimited, SimCarrier) and unlimited.config.tps == 0
    url = "smpp://esme:pw@127.0.0.1:2775?binds=3&tps=50"
    first, second = (open_carrier(url, share=Share(i, 2)) for i in range(2))
    assert isinstance(first, SmppCarrier) and isinstance(second, SmppCarrier)
    assert (len(first.sessions), len(second.sessions)) == (2, 1)
    assert first.config.tps == second.config.tps == 50  # per bind: the total is divided
    with pytest.raises(ValueError, match="binds=3 cannot be shared by 4 workers"):
        open_carrier(url, share=Share(3, 4))
