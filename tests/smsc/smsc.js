#!/usr/bin/env node
// A real SMPP 3.4 SMSC for the smsgw tests, built on the npm package `smpp` (node-smpp).
//
//   node tests/smsc/smsc.js --port 0 [options]
//
// stdout carries one JSON object per line: first {"event":"listening","port":N,...}, then one
// line per notable event (connect, bind, submit_sm, data_sm, deliver_sm, deliver_sm_resp,
// enquire_link, unbind, disconnect, error, reply, stopped), so a test can count exactly what
// reached the SMSC. stdin is a control channel: one JSON command per line (see COMMANDS
// below); every command is answered by a {"event":"reply",...} line echoing its "id".
// The process exits 0 on stdin EOF, SIGTERM or SIGINT, after a final {"event":"stopped"}.
//
// Events (all carry "session", the connection number, where one is involved):
//   listening {host, port, pid}            connect {remote, refused?}
//   bind {mode, system_id, ok, status}     unbind, enquire_link {seq}
//   submit_sm / data_sm {seq, source, source_ton, source_npi, destination, dest_ton,
//     dest_npi, esm_class, registered_delivery, data_coding, short_message (hex), tlvs,
//     status (null: left unanswered), message_id (null unless accepted), ...}
//   deliver_sm {kind: receipt|mo, seq, attempt, message_id, stat, short_message, text, tlvs}
//   deliver_sm_resp {kind, seq, status, message_id}
//   disconnect {mode, system_id, requeued}  error {message}  unknown_command, unsupported
//   reply {id, cmd, ok, ...}                stopped {reason, stats}
// TLVs are keyed by their SMPP name (unknown tags as "0x1234"); integers stay numbers,
// C-strings stay strings, octet strings are hex.
'use strict';

const readline = require('readline');
const smpp = require('smpp');

const USAGE = `usage: node smsc.js [options]
  --host H             address to listen on (127.0.0.1)
  --port N             port to listen on, 0 lets the OS pick (2775)
  --system-id S        the only system_id accepted by bind_* (smsgw)
  --password P         its password (secret)
  --id-style S         message_id style: decimal | hex (decimal)
  --id-start N         first message_id counter value (1)
  --receipt-id S       id in the receipt text: same | decimal (same); "decimal" renders hex
                       ids in decimal, a quirk of some real SMSCs
  --dlr-delay SEC      delay before a delivery receipt is sent (0)
  --undeliv SHARE      share (0..1) of receipts that say UNDELIV (0)
  --seed N             seed of the UNDELIV draw (1)
  --latency SEC        delay before answering submit_sm / data_sm (0)
  --enquire-link SEC   send enquire_link to bound sessions every SEC seconds (0: never)
  --dlr-retry SEC      retry delay after a temporary deliver_sm_resp error (1)
  --deliver-window N   deliver_sm outstanding per session at most (10)
  --dlr-any            a receipt goes to any live bind of its system_id (round robin), not
                       first to the bind its submit came on: as SMSCs serving several ESMEs do
  --quiet              no per-PDU events (submit_sm, deliver_sm, ...): for benchmarks
  --no-stdin           ignore stdin (run until SIGTERM/SIGINT)`;

// ---------------------------------------------------------------------------------------------
// Options

function fail(message) {
  process.stderr.write(`smsc: ${message}\n${USAGE}\n`);
  process.exit(2);
}

function parseNumber(name, text, { min = -Infinity, max = Infinity, integer = false } = {}) {
  const value = Number(text);
  if (text === undefined || text === '' || !Number.isFinite(value) || value < min || value > max
      || (integer && !Number.isInteger(value))) {
    fail(`bad value for --${name}: ${JSON.stringify(text)}`);
  }
  return value;
}

function parseOptions(argv) {
  const options = {
    host: '127.0.0.1',
    port: 2775,
    systemId: 'smsgw',
    password: 'secret',
    idStyle: 'decimal',
    idStart: 1,
    receiptId: 'same',
    dlrDelay: 0,
    undeliv: 0,
    seed: 1,
    latency: 0,
    enquireLink: 0,
    dlrRetry: 1,
    deliverWindow: 10,
    dlrAny: false,
    quiet: false,
    stdin: true,
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const takeValue = () => {
      if (i + 1 >= argv.length) fail(`${flag} needs a value`);
      return argv[++i];
    };
    switch (flag) {
      case '--host': options.host = takeValue(); break;
      case '--port': options.port = parseNumber('port', takeValue(), { min: 0, max: 65535, integer: true }); break;
      case '--system-id': options.systemId = takeValue(); break;
      case '--password': options.password = takeValue(); break;
      case '--id-style':
        options.idStyle = takeValue();
        if (!['decimal', 'hex'].includes(options.idStyle)) fail(`bad --id-style ${options.idStyle}`);
        break;
      case '--id-start': options.idStart = parseNumber('id-start', takeValue(), { min: 0, max: Number.MAX_SAFE_INTEGER, integer: true }); break;
      case '--receipt-id':
        options.receiptId = takeValue();
        if (!['same', 'decimal'].includes(options.receiptId)) fail(`bad --receipt-id ${options.receiptId}`);
        break;
      case '--dlr-delay': options.dlrDelay = parseNumber('dlr-delay', takeValue(), { min: 0 }); break;
      case '--undeliv': options.undeliv = parseNumber('undeliv', takeValue(), { min: 0, max: 1 }); break;
      case '--seed': options.seed = parseNumber('seed', takeValue(), { integer: true }); break;
      case '--latency': options.latency = parseNumber('latency', takeValue(), { min: 0 }); break;
      case '--enquire-link': options.enquireLink = parseNumber('enquire-link', takeValue(), { min: 0 }); break;
      case '--dlr-retry': options.dlrRetry = parseNumber('dlr-retry', takeValue(), { min: 0 }); break;
      case '--deliver-window': options.deliverWindow = parseNumber('deliver-window', takeValue(), { min: 1, integer: true }); break;
      case '--dlr-any': options.dlrAny = true; break;
      case '--quiet': options.quiet = true; break;
      case '--no-stdin': options.stdin = false; break;
      case '-h': case '--help': process.stdout.write(`${USAGE}\n`); process.exit(0); break;
      default: fail(`unknown option ${flag}`);
    }
  }
  return options;
}

const options = parseOptions(process.argv.slice(2));

// ---------------------------------------------------------------------------------------------
// node-smpp decodes short_message into text and time fields into Dates; the tests want the
// bytes and strings exactly as they were on the wire, so every decode filter is disabled.
for (const name of Object.keys(smpp.filters)) {
  smpp.filters[name].decode = (value) => value;
}

const STATUS = smpp.errors; // name -> number, e.g. ESME_RTHROTTLED -> 0x58
const PER_PDU_EVENTS = new Set(['submit_sm', 'data_sm', 'deliver_sm', 'deliver_sm_resp', 'enquire_link']);
const MESSAGE_STATE = {
  ENROUTE: 1, DELIVRD: 2, EXPIRED: 3, DELETED: 4, UNDELIV: 5, ACCEPTD: 6, UNKNOWN: 7, REJECTD: 8,
};
// deliver_sm_resp statuses after which a real SMSC tries the same deliver_sm again later.
const TEMPORARY_STATUSES = new Set([STATUS.ESME_RTHROTTLED, STATUS.ESME_RX_T_APPN, STATUS.ESME_RMSGQFUL, STATUS.ESME_RSYSERR]);
const MAX_DELIVER_ATTEMPTS = 10;
const RECEIVING_MODES = new Set(['receiver', 'transceiver']);
const TRANSMITTING_MODES = new Set(['transmitter', 'transceiver']);

let quiet = options.quiet;

function emit(event) {
  if (quiet && PER_PDU_EVENTS.has(event.event)) return;
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

// mulberry32: a tiny seeded PRNG, so the UNDELIV draw is reproducible from --seed.
function seededRandom(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6D2B79F5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const random = seededRandom(options.seed);

// ---------------------------------------------------------------------------------------------
// State

const counters = {
  connections: 0,
  refused: 0,
  binds: 0,
  bind_failures: 0,
  submit_sm: 0,
  data_sm: 0,
  submit_ok: 0,
  submit_throttled: 0,
  submit_failed: 0,
  submit_unanswered: 0,
  receipts: 0,
  mo: 0,
  deliver_sm_sent: 0,
  deliver_sm_ok: 0,
  deliver_sm_failed: 0,
  deliver_sm_abandoned: 0,
  enquire_link: 0,
  enquire_link_sent: 0,
  enquire_link_resp: 0,
  unbind: 0,
  disconnects: 0,
  drops: 0,
  errors: 0,
  generic_nack: 0,
};

const runtime = {
  latency: options.latency,
  dlrDelay: options.dlrDelay,
  undeliv: options.undeliv,
  silent: false,
  refuse: false,
  bindFailures: 0,
  // Each entry answers the next `left` submissions with `status` (throttle/fail commands),
  // consumed in the order the commands arrived.
  statusOverrides: [],
  // Each entry forces the outcome of the next `left` accepted messages (dlr command).
  outcomeOverrides: [],
};

let nextMessageNumber = options.idStart;
let nextConnectionId = 1;
const connections = new Set();
const pendingDeliveries = []; // receipts and MOs waiting for a bound receiver
const timers = new Set();
let shuttingDown = false;

function later(seconds, fn) {
  if (seconds <= 0) {
    setImmediate(fn);
    return;
  }
  const timer = setTimeout(() => {
    timers.delete(timer);
    fn();
  }, seconds * 1000);
  timers.add(timer);
}

function newMessageId() {
  const number = nextMessageNumber++;
  return options.idStyle === 'hex' ? number.toString(16).padStart(8, '0') : String(number);
}

function receiptTextId(messageId) {
  if (options.receiptId === 'decimal' && options.idStyle === 'hex') {
    return BigInt(`0x${messageId}`).toString(10);
  }
  return messageId;
}

// SMPP receipt dates: YYMMDDhhmm, UTC so that runs are comparable.
function receiptDate(date) {
  const two = (n) => String(n).padStart(2, '0');
  return two(date.getUTCFullYear() % 100) + two(date.getUTCMonth() + 1) + two(date.getUTCDate())
    + two(date.getUTCHours()) + two(date.getUTCMinutes());
}

function hex(buffer) {
  return Buffer.isBuffer(buffer) ? buffer.toString('hex') : '';
}

function jsonable(value) {
  if (Buffer.isBuffer(value)) return value.toString('hex');
  if (Array.isArray(value)) return value.map(jsonable);
  if (value instanceof Date) return value.toISOString();
  if (value && typeof value === 'object') {
    const result = {};
    for (const [key, inner] of Object.entries(value)) result[key] = jsonable(inner);
    return result;
  }
  return value;
}

// The TLVs of a decoded PDU, keyed by their SMPP name; tags node-smpp does not know are kept
// under "0x" + four hex digits. Integers stay numbers, strings stay strings, octets become hex.
function tlvsOf(pdu) {
  const params = smpp.commands[pdu.command].params || {};
  const result = {};
  for (const key of Object.keys(pdu)) {
    if (key in params) continue;
    if (key in smpp.tlvs) {
      result[key] = jsonable(pdu[key]);
    } else if (/^\d+$/.test(key)) {
      result[`0x${Number(key).toString(16).padStart(4, '0')}`] = jsonable(pdu[key]);
    }
  }
  return result;
}

function statusNumber(value) {
  if (typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= 0xFFFFFFFF) {
    return value;
  }
  if (typeof value === 'string' && Object.prototype.hasOwnProperty.call(STATUS, value)) {
    return STATUS[value];
  }
  throw new Error(`bad status ${JSON.stringify(value)}: a number or an ESME_* name`);
}

// The first 20 characters of a message, printable ASCII only, for the receipt's text field.
function receiptText(message, dataCoding, esmClass) {
  let body = Buffer.isBuffer(message) ? message : Buffer.alloc(0);
  if ((esmClass & 0x40) && body.length > 0) body = body.subarray(body[0] + 1); // skip the UDH
  let text;
  if ((dataCoding & 0x0F) === 0x08) {
    const even = body.subarray(0, body.length - (body.length % 2));
    text = Buffer.from(even).swap16().toString('utf16le');
  } else {
    text = body.toString('latin1');
  }
  return Array.from(text).slice(0, 20).map((c) => (c >= ' ' && c <= '~' ? c : '?')).join('');
}

// ---------------------------------------------------------------------------------------------
// Connections

class Connection {
  constructor(session) {
    this.id = nextConnectionId++;
    this.session = session;
    this.mode = null; // 'transmitter' | 'receiver' | 'transceiver' once bound
    this.systemId = null;
    this.open = true;
    this.remote = `${session.socket.remoteAddress}:${session.socket.remotePort}`;
    this.outstanding = new Map(); // sequence_number -> delivery awaiting deliver_sm_resp
    this.enquireTimer = null;
  }

  canReceive() {
    return this.open && RECEIVING_MODES.has(this.mode);
  }

  // Bound for deliveries and with room in its deliver_sm window.
  canTakeDelivery() {
    return this.canReceive() && this.outstanding.size < options.deliverWindow;
  }

  canTransmit() {
    return this.open && TRANSMITTING_MODES.has(this.mode);
  }

  send(pdu, onResponse) {
    if (!this.open) return false;
    return this.session.send(pdu, onResponse);
  }
}

function onSession(session) {
  const connection = new Connection(session);
  counters.connections++;
  if (runtime.refuse || shuttingDown) {
    counters.refused++;
    emit({ event: 'connect', session: connection.id, remote: connection.remote, refused: true });
    connection.open = false;
    session.on('error', () => {});
    session.destroy();
    return;
  }
  connections.add(connection);
  // As a production SMSC does: without it Nagle holds small answers back for the client's
  // delayed ACK, and a window of 10 is bound by that wait rather than by either side's work.
  session.socket.setNoDelay(true);
  emit({ event: 'connect', session: connection.id, remote: connection.remote });

  session.on('pdu', (pdu) => {
    try {
      onPdu(connection, pdu);
    } catch (error) {
      counters.errors++;
      emit({ event: 'error', session: connection.id, message: String(error && error.stack || error) });
      session.destroy();
    }
  });
  // A PDU node-smpp cannot parse (bad length, truncated fields) stops its reader for good, so
  // the connection is closed, as an SMSC does with a stream it can no longer frame.
  session.on('error', (error) => {
    counters.errors++;
    emit({ event: 'error', session: connection.id, message: String(error && error.message || error) });
    session.destroy();
  });
  session.on('close', () => onClose(connection));
}

function onClose(connection) {
  if (!connections.has(connection)) return;
  connections.delete(connection);
  connection.open = false;
  if (connection.enquireTimer) clearInterval(connection.enquireTimer);
  counters.disconnects++;
  // Deliveries the ESME never acknowledged are sent again on the next bind: at least once.
  const unacknowledged = [...connection.outstanding.values()];
  connection.outstanding.clear();
  pendingDeliveries.unshift(...unacknowledged);
  emit({
    event: 'disconnect',
    session: connection.id,
    mode: connection.mode,
    system_id: connection.systemId,
    requeued: unacknowledged.length,
  });
  flushDeliveries();
}

function onPdu(connection, pdu) {
  if (pdu.isResponse()) {
    // Responses to our requests are handled by node-smpp's per-sequence callbacks.
    if (pdu.command === 'generic_nack') counters.generic_nack++;
    return;
  }
  switch (pdu.command) {
    case 'bind_transmitter':
    case 'bind_receiver':
    case 'bind_transceiver':
      onBind(connection, pdu);
      break;
    case 'submit_sm':
    case 'data_sm':
      onSubmission(connection, pdu);
      break;
    case 'enquire_link':
      counters.enquire_link++;
      emit({ event: 'enquire_link', session: connection.id, seq: pdu.sequence_number });
      connection.send(pdu.response());
      break;
    case 'unbind':
      onUnbind(connection, pdu);
      break;
    case 'unknown':
      counters.errors++;
      emit({ event: 'unknown_command', session: connection.id, command_id: pdu.command_id, seq: pdu.sequence_number });
      connection.send(pdu.response()); // generic_nack ESME_RINVCMDID
      break;
    default:
      // A valid SMPP request this SMSC does not implement (query_sm, cancel_sm, ...).
      emit({ event: 'unsupported', session: connection.id, command: pdu.command, seq: pdu.sequence_number });
      connection.send(pdu.response({ command_status: STATUS.ESME_RINVCMDID }));
  }
}

function onBind(connection, pdu) {
  const mode = pdu.command.slice('bind_'.length);
  let status = STATUS.ESME_ROK;
  if (connection.mode) {
    status = STATUS.ESME_RALYBND;
  } else if (runtime.bindFailures > 0) {
    runtime.bindFailures--;
    status = STATUS.ESME_RBINDFAIL;
  } else if (pdu.system_id !== options.systemId || pdu.password !== options.password) {
    status = STATUS.ESME_RBINDFAIL;
  }
  emit({
    event: 'bind',
    session: connection.id,
    mode,
    system_id: pdu.system_id,
    system_type: pdu.system_type,
    interface_version: pdu.interface_version,
    ok: status === STATUS.ESME_ROK,
    status,
  });
  if (status === STATUS.ESME_RALYBND) {
    connection.send(pdu.response({ command_status: status }));
    return;
  }
  if (status !== STATUS.ESME_ROK) {
    counters.bind_failures++;
    connection.send(pdu.response({ command_status: status }));
    connection.open = false;
    connection.session.close(); // end after the response is flushed
    return;
  }
  counters.binds++;
  connection.mode = mode;
  connection.systemId = pdu.system_id;
  connection.send(pdu.response({ system_id: 'smsc' }));
  if (options.enquireLink > 0) {
    connection.enquireTimer = setInterval(() => sendEnquireLink(connection), options.enquireLink * 1000);
  }
  if (connection.canReceive()) flushDeliveries();
}

function sendEnquireLink(connection) {
  const sent = connection.send(new smpp.PDU('enquire_link'), () => {
    counters.enquire_link_resp++;
  });
  if (sent) counters.enquire_link_sent++;
}

function onUnbind(connection, pdu) {
  counters.unbind++;
  emit({ event: 'unbind', session: connection.id, system_id: connection.systemId });
  const wasBound = connection.mode !== null;
  connection.send(pdu.response({ command_status: wasBound ? STATUS.ESME_ROK : STATUS.ESME_RINVBNDSTS }));
  connection.open = false; // no more deliveries over it
  connection.session.close();
}

function takeStatusOverride() {
  const head = runtime.statusOverrides[0];
  if (!head) return STATUS.ESME_ROK;
  head.left--;
  if (head.left <= 0) runtime.statusOverrides.shift();
  return head.status;
}

function takeOutcome() {
  const head = runtime.outcomeOverrides[0];
  if (head) {
    head.left--;
    if (head.left <= 0) runtime.outcomeOverrides.shift();
    return { stat: head.stat, err: head.err };
  }
  if (runtime.undeliv > 0 && random() < runtime.undeliv) return { stat: 'UNDELIV', err: '001' };
  return { stat: 'DELIVRD', err: '000' };
}

function wantsReceipt(registeredDelivery, stat) {
  switch (registeredDelivery & 0x03) {
    case 1: return true;
    case 2: return stat !== 'DELIVRD';
    case 3: return stat === 'DELIVRD'; // SMPP 5.0: success only
    default: return false;
  }
}

function onSubmission(connection, pdu) {
  counters[pdu.command]++;
  const received = new Date();
  let status;
  if (!connection.canTransmit()) {
    status = STATUS.ESME_RINVBNDSTS;
  } else if (runtime.silent) {
    status = null;
  } else {
    status = takeStatusOverride();
  }
  const messageId = status === STATUS.ESME_ROK ? newMessageId() : null;
  if (status === null) counters.submit_unanswered++;
  else if (status === STATUS.ESME_ROK) counters.submit_ok++;
  else if (status === STATUS.ESME_RTHROTTLED) counters.submit_throttled++;
  else counters.submit_failed++;

  const message = pdu.command === 'submit_sm' ? pdu.short_message : pdu.message_payload;
  emit({
    event: pdu.command,
    session: connection.id,
    system_id: connection.systemId,
    seq: pdu.sequence_number,
    service_type: pdu.service_type,
    source: pdu.source_addr,
    source_ton: pdu.source_addr_ton,
    source_npi: pdu.source_addr_npi,
    destination: pdu.destination_addr,
    dest_ton: pdu.dest_addr_ton,
    dest_npi: pdu.dest_addr_npi,
    esm_class: pdu.esm_class,
    protocol_id: pdu.protocol_id,
    priority_flag: pdu.priority_flag,
    schedule_delivery_time: pdu.schedule_delivery_time,
    validity_period: pdu.validity_period,
    registered_delivery: pdu.registered_delivery,
    data_coding: pdu.data_coding,
    short_message: hex(pdu.short_message),
    tlvs: tlvsOf(pdu),
    status,
    message_id: messageId,
  });
  if (status === null) return; // silent: the ESME's window slot stays taken, as with a lost resp

  const answer = () => {
    const fields = status === STATUS.ESME_ROK ? { message_id: messageId } : { command_status: status };
    connection.send(pdu.response(fields));
  };
  if (runtime.latency > 0) later(runtime.latency, answer);
  else answer();

  if (status !== STATUS.ESME_ROK) return;
  const outcome = takeOutcome();
  if (!wantsReceipt(pdu.registered_delivery || 0, outcome.stat)) return;
  const receipt = {
    kind: 'receipt',
    systemId: connection.systemId,
    preferred: connection,
    messageId,
    stat: outcome.stat,
    err: outcome.err,
    submitted: received,
    original: {
      source: pdu.source_addr || '',
      sourceTon: pdu.source_addr_ton || 0,
      sourceNpi: pdu.source_addr_npi || 0,
      destination: pdu.destination_addr || '',
      destTon: pdu.dest_addr_ton || 0,
      destNpi: pdu.dest_addr_npi || 0,
    },
    text: receiptText(message, pdu.data_coding || 0, pdu.esm_class || 0),
    attempts: 0,
  };
  counters.receipts++;
  later(runtime.dlrDelay, () => {
    receipt.done = new Date();
    queueDelivery(receipt);
  });
}

// ---------------------------------------------------------------------------------------------
// deliver_sm: receipts and MOs

function deliverPdu(delivery) {
  if (delivery.kind === 'mo') {
    return new smpp.PDU('deliver_sm', {
      source_addr_ton: delivery.sourceTon,
      source_addr_npi: delivery.sourceNpi,
      source_addr: delivery.source,
      dest_addr_ton: delivery.destTon,
      dest_addr_npi: delivery.destNpi,
      destination_addr: delivery.destination,
      esm_class: delivery.esmClass,
      data_coding: delivery.dataCoding,
      short_message: delivery.shortMessage,
      ...delivery.tlvs,
    });
  }
  const delivered = delivery.stat === 'DELIVRD';
  const text = `id:${receiptTextId(delivery.messageId)} sub:001 dlvrd:${delivered ? '001' : '000'}`
    + ` submit date:${receiptDate(delivery.submitted)} done date:${receiptDate(delivery.done)}`
    + ` stat:${delivery.stat} err:${delivery.err} text:${delivery.text}`;
  const original = delivery.original;
  return new smpp.PDU('deliver_sm', {
    // A receipt travels back: from the handset the message went to, to its sender.
    source_addr_ton: original.destTon,
    source_addr_npi: original.destNpi,
    source_addr: original.destination,
    dest_addr_ton: original.sourceTon,
    dest_addr_npi: original.sourceNpi,
    destination_addr: original.source,
    esm_class: 0x04,
    data_coding: 0,
    short_message: Buffer.from(text, 'latin1'),
    receipted_message_id: delivery.messageId,
    message_state: MESSAGE_STATE[delivery.stat] || MESSAGE_STATE.UNKNOWN,
  });
}

function queueDelivery(delivery) {
  pendingDeliveries.push(delivery);
  flushDeliveries();
}

let roundRobin = 0;

function pickReceiver(delivery) {
  const preferred = options.dlrAny ? null : delivery.preferred;
  if (preferred && preferred.canTakeDelivery() && connections.has(preferred)) return preferred;
  const candidates = [...connections].filter((c) => c.canTakeDelivery() && c.systemId === delivery.systemId);
  if (candidates.length === 0) return null;
  roundRobin = (roundRobin + 1) % candidates.length;
  return candidates[roundRobin];
}

function flushDeliveries() {
  if (shuttingDown || pendingDeliveries.length === 0) return;
  // Without a session that can take one, every delivery keeps waiting: skip the scan.
  if (![...connections].some((c) => c.canTakeDelivery())) return;
  const waiting = pendingDeliveries.splice(0, pendingDeliveries.length);
  for (const delivery of waiting) {
    const connection = pickReceiver(delivery);
    if (!connection || !sendDelivery(connection, delivery)) pendingDeliveries.push(delivery);
  }
}

function sendDelivery(connection, delivery) {
  const pdu = deliverPdu(delivery);
  const sent = connection.send(pdu, (response) => onDeliverResponse(connection, delivery, response));
  if (!sent) return false;
  delivery.attempts++;
  connection.outstanding.set(pdu.sequence_number, delivery);
  counters.deliver_sm_sent++;
  emit({
    event: 'deliver_sm',
    session: connection.id,
    kind: delivery.kind,
    seq: pdu.sequence_number,
    attempt: delivery.attempts,
    message_id: delivery.kind === 'receipt' ? delivery.messageId : null,
    stat: delivery.kind === 'receipt' ? delivery.stat : null,
    source: pdu.source_addr,
    destination: pdu.destination_addr,
    esm_class: pdu.esm_class,
    data_coding: pdu.data_coding,
    short_message: hex(pdu.short_message),
    text: delivery.kind === 'receipt' ? pdu.short_message.toString('latin1') : undefined,
    tlvs: tlvsOf(pdu),
  });
  return true;
}

function onDeliverResponse(connection, delivery, response) {
  connection.outstanding.delete(response.sequence_number);
  const status = response.command_status;
  emit({
    event: 'deliver_sm_resp',
    session: connection.id,
    kind: delivery.kind,
    seq: response.sequence_number,
    command: response.command,
    status,
    message_id: delivery.kind === 'receipt' ? delivery.messageId : null,
  });
  if (status === STATUS.ESME_ROK) {
    counters.deliver_sm_ok++;
  } else {
    counters.deliver_sm_failed++;
    if (TEMPORARY_STATUSES.has(status) && delivery.attempts < MAX_DELIVER_ATTEMPTS) {
      delivery.preferred = null;
      later(options.dlrRetry, () => queueDelivery(delivery));
    } else {
      counters.deliver_sm_abandoned++;
    }
  }
  flushDeliveries(); // a window slot is free again
}

// ---------------------------------------------------------------------------------------------
// Control channel (stdin)

function count(command, fallback = 1) {
  const n = command.n === undefined ? fallback : command.n;
  if (!Number.isInteger(n) || n < 0) throw new Error(`bad n ${JSON.stringify(command.n)}`);
  return n;
}

function flag(command) {
  if (command.on === undefined) return true;
  if (typeof command.on !== 'boolean') throw new Error(`bad on ${JSON.stringify(command.on)}`);
  return command.on;
}

function snapshot() {
  let outstanding = 0;
  let bound = 0;
  for (const connection of connections) {
    outstanding += connection.outstanding.size;
    if (connection.mode && connection.open) bound++;
  }
  return {
    ...counters,
    sessions: connections.size,
    bound,
    pending_deliveries: pendingDeliveries.length,
    outstanding_deliveries: outstanding,
  };
}

function moFromCommand(command) {
  const dataCoding = command.data_coding === undefined ? 0 : command.data_coding;
  if (!Number.isInteger(dataCoding) || dataCoding < 0 || dataCoding > 255) throw new Error('bad data_coding');
  let shortMessage;
  if (typeof command.hex === 'string') {
    if (!/^([0-9a-fA-F]{2})*$/.test(command.hex)) throw new Error('bad hex');
    shortMessage = Buffer.from(command.hex, 'hex');
  } else if (typeof command.text === 'string') {
    shortMessage = (dataCoding & 0x0F) === 0x08
      ? Buffer.from(command.text, 'utf16le').swap16()
      : Buffer.from(command.text, 'latin1');
  } else {
    throw new Error('mo needs "text" or "hex"');
  }
  if (shortMessage.length > 254) throw new Error('short_message longer than 254 octets');
  if (typeof command.source !== 'string' || typeof command.destination !== 'string') {
    throw new Error('mo needs "source" and "destination" strings');
  }
  const tlvs = {};
  for (const [name, value] of Object.entries(command.tlvs || {})) {
    const tlv = smpp.tlvs[name];
    if (!tlv) throw new Error(`unknown TLV ${name}`);
    // Octet-string TLVs are given in hex, like the events print them.
    tlvs[name] = tlv.type === smpp.types.tlv.buffer && typeof value === 'string' ? Buffer.from(value, 'hex') : value;
  }
  return {
    kind: 'mo',
    systemId: typeof command.system_id === 'string' ? command.system_id : options.systemId,
    preferred: null,
    source: command.source,
    sourceTon: command.source_ton || 0,
    sourceNpi: command.source_npi || 0,
    destination: command.destination,
    destTon: command.dest_ton || 0,
    destNpi: command.dest_npi || 0,
    esmClass: command.esm_class || 0,
    dataCoding,
    shortMessage,
    tlvs,
    attempts: 0,
  };
}

// COMMANDS: name -> handler(command) returning extra reply fields. A command is one JSON
// object per stdin line; "id" (any JSON value) is echoed in its reply:
//   {"cmd":"throttle","n":5}            next 5 submit_sm/data_sm answered ESME_RTHROTTLED
//   {"cmd":"fail","status":N|"ESME_..","n":K}  next K answered with that status
//                                        (throttle/fail queue up in the order given)
//   {"cmd":"dlr","stat":"UNDELIV","n":K,"err":"001"}  next K accepted messages end so
//   {"cmd":"silent","on":true}           stop answering submit_sm/data_sm (false: resume)
//   {"cmd":"refuse","on":true}           close new connections at once
//   {"cmd":"bindfail","n":K}             next K binds fail with ESME_RBINDFAIL
//   {"cmd":"drop"}                       destroy every connection now
//   {"cmd":"mo","source":S,"destination":D,"text":T | "hex":H,
//    "data_coding":0,"esm_class":0,"tlvs":{name:value},"system_id":S}
//                                        a mobile-originated deliver_sm, queued until a
//                                        receiver/transceiver of that system_id is bound
//   {"cmd":"set","latency":s,"dlr_delay":s,"undeliv":share}  change those at run time
//   {"cmd":"reset"}                      forget throttle/fail/dlr/silent/refuse/bindfail
//   {"cmd":"quiet","on":true}            stop (false: resume) per-PDU events
//   {"cmd":"stats"}                      counters, in the reply's "stats"
// Reply: {"event":"reply","id":..,"cmd":..,"ok":true,...} or {"ok":false,"error":".."}.
const COMMANDS = {
  throttle(command) {
    const n = count(command);
    if (n > 0) runtime.statusOverrides.push({ status: STATUS.ESME_RTHROTTLED, left: n });
    return { n };
  },
  fail(command) {
    const n = count(command);
    const status = statusNumber(command.status === undefined ? STATUS.ESME_RSYSERR : command.status);
    if (n > 0) runtime.statusOverrides.push({ status, left: n });
    return { n, status };
  },
  dlr(command) {
    const n = count(command);
    const stat = command.stat === undefined ? 'UNDELIV' : command.stat;
    if (!(stat in MESSAGE_STATE)) throw new Error(`bad stat ${JSON.stringify(stat)}`);
    const err = command.err === undefined ? (stat === 'DELIVRD' ? '000' : '001') : String(command.err);
    if (n > 0) runtime.outcomeOverrides.push({ stat, err, left: n });
    return { n, stat, err };
  },
  silent(command) {
    runtime.silent = flag(command);
    return { on: runtime.silent };
  },
  refuse(command) {
    runtime.refuse = flag(command);
    return { on: runtime.refuse };
  },
  bindfail(command) {
    runtime.bindFailures = count(command);
    return { n: runtime.bindFailures };
  },
  drop() {
    const dropped = connections.size;
    counters.drops += dropped;
    for (const connection of [...connections]) {
      connection.open = false;
      connection.session.destroy();
    }
    return { dropped };
  },
  mo(command) {
    const mo = moFromCommand(command);
    counters.mo++;
    queueDelivery(mo);
    return { queued: pendingDeliveries.includes(mo) };
  },
  set(command) {
    const numeric = { latency: 'latency', dlr_delay: 'dlrDelay', undeliv: 'undeliv' };
    for (const [key, field] of Object.entries(numeric)) {
      if (command[key] === undefined) continue;
      const value = command[key];
      if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || (key === 'undeliv' && value > 1)) {
        throw new Error(`bad ${key} ${JSON.stringify(value)}`);
      }
      runtime[field] = value;
    }
    return { latency: runtime.latency, dlr_delay: runtime.dlrDelay, undeliv: runtime.undeliv };
  },
  reset() {
    runtime.statusOverrides = [];
    runtime.outcomeOverrides = [];
    runtime.silent = false;
    runtime.refuse = false;
    runtime.bindFailures = 0;
    return {};
  },
  quiet(command) {
    quiet = flag(command);
    return { on: quiet };
  },
  stats() {
    return { stats: snapshot() };
  },
};

function onControlLine(line) {
  if (line.trim() === '') return;
  let command;
  try {
    command = JSON.parse(line);
  } catch (error) {
    emit({ event: 'reply', id: null, cmd: null, ok: false, error: `bad JSON: ${error.message}` });
    return;
  }
  const reply = { event: 'reply', id: null, cmd: null };
  if (command === null || typeof command !== 'object' || Array.isArray(command)) {
    emit({ ...reply, ok: false, error: 'a command is a JSON object' });
    return;
  }
  reply.id = command.id === undefined ? null : command.id;
  reply.cmd = command.cmd === undefined ? null : command.cmd;
  const handler = Object.prototype.hasOwnProperty.call(COMMANDS, command.cmd) ? COMMANDS[command.cmd] : null;
  if (!handler) {
    emit({ ...reply, ok: false, error: `unknown cmd ${JSON.stringify(command.cmd)}` });
    return;
  }
  try {
    emit({ ...reply, ok: true, ...handler(command) });
  } catch (error) {
    emit({ ...reply, ok: false, error: error.message });
  }
}

// ---------------------------------------------------------------------------------------------
// Start and stop

const server = smpp.createServer(onSession);

function shutdown(reason) {
  if (shuttingDown) return;
  shuttingDown = true;
  for (const timer of timers) clearTimeout(timer);
  for (const connection of connections) {
    if (connection.enquireTimer) clearInterval(connection.enquireTimer);
    connection.session.destroy();
  }
  server.close();
  emit({ event: 'stopped', reason, stats: snapshot() });
  process.exit(0);
}

server.on('error', (error) => {
  process.stderr.write(`smsc: ${error.message}\n`);
  process.exit(1);
});

// The reader of stdout went away: nobody is left to report to.
process.stdout.on('error', () => process.exit(0));
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));

server.listen(options.port, options.host, () => {
  const address = server.address();
  emit({ event: 'listening', host: address.address, port: address.port, pid: process.pid });
  if (options.stdin) {
    const control = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
    control.on('line', onControlLine);
    control.on('close', () => shutdown('stdin closed'));
  }
});
