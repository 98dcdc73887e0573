#!/usr/bin/env node
// A minimal Node ESME that measures how fast an SMSC answers: it binds, sends --count
// submit_sm keeping --window of them outstanding, then prints one JSON line
//   {"submits":K,"ok":A,"failed":F,"seconds":S,"per_second":R}
// and exits 0 (1 with a message on stderr if the bind fails, the connection breaks or
// --timeout passes). The SMPP benchmark uses it as the ceiling a gateway can reach.
// The time runs from the bind to the last submit_sm_resp. With --registered-delivery it
// then stays bound until every accepted message's receipt has come (answering each), so no
// receipt is left queued at the SMSC for the next ESME binding with the same system_id.
'use strict';

const smpp = require('smpp');

const USAGE = `usage: node blast.js --port N --count K [options]
  --host H               SMSC address (127.0.0.1)
  --port N               SMSC port (required)
  --count K              number of submit_sm to send (required)
  --window W             submit_sm outstanding at once (10)
  --system-id S          bind system_id (smsgw)
  --password P           bind password (secret)
  --bind MODE            transmitter | transceiver (transmitter)
  --registered-delivery N  registered_delivery of every submit_sm (0)
  --timeout SEC          give up after SEC seconds (60)`;

function fail(message, code = 2) {
  process.stderr.write(`blast: ${message}\n`);
  if (code === 2) process.stderr.write(`${USAGE}\n`);
  process.exit(code);
}

function positiveInteger(name, text, min) {
  const value = Number(text);
  if (!Number.isInteger(value) || value < min) fail(`bad value for --${name}: ${JSON.stringify(text)}`);
  return value;
}

function parseOptions(argv) {
  const options = {
    host: '127.0.0.1',
    port: null,
    count: null,
    window: 10,
    systemId: 'smsgw',
    password: 'secret',
    bind: 'transmitter',
    registeredDelivery: 0,
    timeout: 60,
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const takeValue = () => {
      if (i + 1 >= argv.length) fail(`${flag} needs a value`);
      return argv[++i];
    };
    switch (flag) {
      case '--host': options.host = takeValue(); break;
      case '--port': options.port = positiveInteger('port', takeValue(), 1); break;
      case '--count': options.count = positiveInteger('count', takeValue(), 1); break;
      case '--window': options.window = positiveInteger('window', takeValue(), 1); break;
      case '--system-id': options.systemId = takeValue(); break;
      case '--password': options.password = takeValue(); break;
      case '--bind':
        options.bind = takeValue();
        if (!['transmitter', 'transceiver'].includes(options.bind)) fail(`bad --bind ${options.bind}`);
        break;
      case '--registered-delivery': options.registeredDelivery = positiveInteger('registered-delivery', takeValue(), 0); break;
      case '--timeout': options.timeout = positiveInteger('timeout', takeValue(), 1); break;
      case '-h': case '--help': process.stdout.write(`${USAGE}\n`); process.exit(0); break;
      default: fail(`unknown option ${flag}`);
    }
  }
  if (options.port === null || options.count === null) fail('--port and --count are required');
  return options;
}

const options = parseOptions(process.argv.slice(2));
const shortMessage = Buffer.from('blast: the quick brown fox jumps over the lazy dog', 'latin1');

let sent = 0;
let answered = 0;
let ok = 0;
let failed = 0;
let started = null;
let finished = false;

const timer = setTimeout(() => {
  fail(`timed out after ${options.timeout}s with ${answered}/${options.count} answered`, 1);
}, options.timeout * 1000);

const session = smpp.connect({ host: options.host, port: options.port });

session.on('error', (error) => fail(`connection error: ${error.message}`, 1));
session.on('close', () => {
  if (!finished) fail(`connection closed after ${answered}/${options.count} answered`, 1);
});
// Keep the SMSC happy if it talks to us while we blast.
session.on('enquire_link', (pdu) => session.send(pdu.response()));
let receipts = 0;
let seconds = null; // set at the last submit_sm_resp
session.on('deliver_sm', (pdu) => {
  session.send(pdu.response());
  receipts++;
  if (seconds !== null && receipts >= ok) finish();
});
session.on('unbind', (pdu) => session.send(pdu.response()));

function onSubmitResponse(response) {
  answered++;
  if (response.command_status === 0) ok++;
  else failed++;
  if (answered === options.count) {
    seconds = Number(process.hrtime.bigint() - started) / 1e9;
    if (options.registeredDelivery === 0 || receipts >= ok) finish();
    return;
  }
  pump();
}

function pump() {
  while (sent < options.count && sent - answered < options.window) {
    sent++;
    session.submit_sm({
      source_addr: 'blast',
      destination_addr: String(10000000000 + sent),
      registered_delivery: options.registeredDelivery,
      data_coding: 0,
      short_message: shortMessage,
    }, onSubmitResponse);
  }
}

function finish() {
  if (finished) return;
  finished = true;
  clearTimeout(timer);
  process.stdout.write(`${JSON.stringify({
    submits: options.count,
    ok,
    failed,
    seconds: Number(seconds.toFixed(6)),
    per_second: Number((options.count / seconds).toFixed(1)),
  })}\n`);
  // Unbind politely, but do not wait long for an SMSC that does not answer.
  const exit = () => process.exit(0);
  setTimeout(exit, 1000).unref();
  session.unbind(() => session.close(exit));
}

session.on('connect', () => {
  session.socket.setNoDelay(true); // like the gateway (Trio sets TCP_NODELAY)
  session[`bind_${options.bind}`]({ system_id: options.systemId, password: options.password }, (response) => {
    if (response.command_status !== 0) {
      fail(`bind_${options.bind} refused with status ${response.command_status}`, 1);
    }
    started = process.hrtime.bigint();
    pump();
  });
});
