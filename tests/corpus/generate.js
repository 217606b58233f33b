#!/usr/bin/env node
// Writes tests/corpus/*.json: production-dialect deliveries (and one in the
// docs dialect) exactly as ImgGo's sender writes them, with JSON.stringify.
// tests/api/stringify.rs sends each one signed and checks that `show`
// prints it back byte for byte; `too_deep_129.json` must be refused.
//
// Deterministic: fixed ids and timestamps, no randomness. Run with
// `node tests/corpus/generate.js` and commit the output beside it.
//
// No body may hold anything the default redaction (CONTRACT §4) would
// change, or it would not come back unchanged: `assertUntouched` below
// refuses card-like digit runs, SSN-like text and rule names.
'use strict';

const fs = require('fs');
const path = require('path');

const dir = __dirname;
const TIMESTAMP = '2026-11-24T10:00:00.000Z';

function jobId(n) {
  return `3f1c9a8e-0000-4000-8000-${String(n).padStart(12, '0')}`;
}

function prod(n, manifest, extra = {}) {
  return {
    event: 'job.succeeded',
    job_id: jobId(n),
    pattern_id: '5b7e2f6a-0d1c-4e2a-9b8f-3c4d5e6f7a8b',
    manifest,
    error: null,
    timestamp: TIMESTAMP,
    ...extra,
  };
}

// An object whose own property is literally "__proto__" (an object literal
// would set the prototype instead), as a sender's JSON.parse would make it.
function withProto(value) {
  const o = {};
  Object.defineProperty(o, '__proto__', { value, enumerable: true, writable: true, configurable: true });
  return o;
}

function nest(levels, leaf) {
  let v = leaf;
  for (let i = 0; i < levels; i++) v = i % 2 ? { d: v } : [v];
  return v;
}

// Every control character, DEL and the C1 range.
let controls = '';
for (let c = 0; c < 0x20; c++) controls += String.fromCharCode(c);
const c1 = '\x7f' + Array.from({ length: 0x20 }, (_, i) => String.fromCharCode(0x80 + i)).join('');

const bodies = {
  unicode: prod(1, {
    bmp: 'Grüße aus Köln, 你好, Ελληνικά, Привет, ﬁ ligature, €, ½',
    astral: '😀 🚀 𝄞 𐍈 👩‍👩‍👧‍👦 🇩🇪 👍🏽',
    combining: 'e\u0301 a\u0308 n\u0303 \u0915\u094d\u0937 Z\u0351\u0360\u0353',
    rtl: 'שלום עולם · مرحبا بالعالم · \u202eevil\u202c · \u200f',
    zero_width: 'a\u200bb\u200cc\u200dd\ufeffe',
    edges: '\u00a0\u0100\u07ff\u0800\ud7ff\ue000\ufffd\ufffe\uffff\u{10000}\u{10ffff}',
    'ключ 🔑': 'keys too: ü 中 😀',
  }),
  lone_surrogates: prod(2, {
    high: '\ud800',
    low: '\udc00',
    reversed_pair: '\ude00\ud83d',
    high_then_text: '\udbffA',
    high_then_high: '\ud800\ud800',
    at_both_ends: '\udfffmiddle\ud800',
    beside_a_pair: '\ud83d\ud83d\ude00\ude00',
    in_array: ['\ud834', 'ok', '\udd1e'],
    'key \ud800 high': 1,
    'key \udc00 low': 2,
    '\ude00\ud83d': 'reversed pair as a key',
  }),
  separators: prod(3, {
    line_separator: 'a\u2028b',
    paragraph_separator: 'c\u2029d',
    both: '\u2028\u2029',
    'key\u2028': '\u2029',
  }),
  controls: prod(4, {
    c0: controls,
    c1,
    each: Array.from(controls),
    'key\n\t\u0000': 'control characters in a key',
  }),
  numbers: prod(5, {
    negative_zero: -0,
    big: 1e21,
    tiny: 5e-324,
    beyond_2_53: 2 ** 53 + 2,
    tenth: 0.1,
    small: 1e-7,
    max: Number.MAX_VALUE,
    min_normal: 2.2250738585072014e-308,
    negative: -123.456,
    huge: 1.5e300,
    integer: 42,
    zero: 0,
    third: 1 / 3,
    not_finite: [NaN, Infinity, -Infinity],
  }),
  deep_128: prod(6, nest(127, 'bottom')),
  manifest_string: prod(7, 'a manifest that is a string'),
  manifest_array: prod(8, [1, 'two', { three: 3 }, [null], true]),
  manifest_null: {
    event: 'job.failed',
    job_id: jobId(9),
    pattern_id: '5b7e2f6a-0d1c-4e2a-9b8f-3c4d5e6f7a8b',
    manifest: null,
    error: 'extraction failed: the image is blank',
    timestamp: TIMESTAMP,
  },
  odd_keys: prod(10, {
    '': 'empty key',
    ...withProto({ polluted: true }),
    '$serde_json::private::Number': '12.50',
    '$serde_json::private::RawValue': { raw: 1 },
    nested: { '$serde_json::private::Number': 7 },
    'with "quotes"': 1,
    'with \\ backslash': 2,
    'with\nnewline': 3,
    'with /slash': 4,
    Total: 1,
    total: 2,
    TOTAL: 3,
    '1': 'numeric key (JS writes it first)',
    ' ': 'space',
  }),
  docs_dialect: {
    event: 'job.completed',
    job_id: 'job_01HXYZ:stringify',
    pattern_id: 'pat_invoices_v2',
    status: 'completed',
    result: { merchant: 'Café «Zoë» 😀', total: 9.99, lone: '\udead', items: ['tea', 'milk'] },
    error: null,
    confidence: 0.97,
    processing_time_ms: 3420,
    created_at: '2026-11-24T10:00:00Z',
    completed_at: '2026-11-24T10:00:03Z',
  },
};

// Refused with 400 invalid_json: one level more than CONTRACT §1 promises.
const tooDeep = prod(11, nest(128, 'bottom'));

// --- nothing the redaction would touch -----------------------------------

const RULE_NAMES = `ssn social_security_number social_security_no ss_number us_ssn itin passport
  passport_number passport_no drivers_license driver_license drivers_license_number dl_number
  credit_card card_number credit_card_number cc_number cc_num cc_no card_no card_pan pan
  primary_account_number debit_card_number payment_card_number iban bank_account
  bank_account_number cvv cvc cvv2 cvc2 csc cvd cvn cav2 security_code card_security_code
  card_verification_value card_verification_code card_code pin pin_block track_data track1
  track2 magstripe mrz mrz_line1 mrz_line2 pdf417 barcode_data`
  .split(/\s+/)
  .map(normalize);
const ENVELOPE = new Set(['event', 'job_id', 'pattern_id', 'status', 'timestamp', 'created_at', 'completed_at']);

function normalize(name) {
  return name.replace(/[^\p{L}\p{N}]/gu, '').toLowerCase();
}

function luhn(digits) {
  let sum = 0;
  for (let i = 0; i < digits.length; i++) {
    let d = Number(digits[digits.length - 1 - i]);
    if (i % 2) d = d * 2 > 9 ? d * 2 - 9 : d * 2;
    sum += d;
  }
  return sum % 10 === 0;
}

function assertUntouched(value, where, top) {
  if (typeof value === 'string') {
    if (/\d(?:[ -]?\d){12}/.test(value)) throw new Error(`${where}: a card-like digit run`);
    if (/\d{3}-\d{2}-\d{4}/.test(value)) throw new Error(`${where}: SSN-like text`);
  } else if (typeof value === 'number') {
    const text = JSON.stringify(value);
    if (/^\d{13,19}$/.test(text) && luhn(text)) throw new Error(`${where}: a Luhn-valid integer`);
  } else if (Array.isArray(value)) {
    value.forEach((v, i) => assertUntouched(v, `${where}[${i}]`, false));
  } else if (value !== null && typeof value === 'object') {
    for (const key of Object.keys(value)) {
      if (RULE_NAMES.includes(normalize(key))) throw new Error(`${where}.${key}: a redaction rule name`);
      if (top && ENVELOPE.has(key)) continue;
      assertUntouched(value[key], `${where}.${key}`, false);
    }
  }
}

function depth(value) {
  if (value === null || typeof value !== 'object') return 0;
  return 1 + Math.max(0, ...Object.values(value).map(depth));
}

// --- write ---------------------------------------------------------------

for (const old of fs.readdirSync(dir).filter((f) => f.endsWith('.json'))) {
  fs.unlinkSync(path.join(dir, old));
}
for (const [name, body] of Object.entries(bodies)) {
  assertUntouched(body, name, true);
  fs.writeFileSync(path.join(dir, `${name}.json`), JSON.stringify(body));
}
if (depth(bodies.deep_128) !== 128 || depth(tooDeep) !== 129) throw new Error('nesting miscounted');
fs.writeFileSync(path.join(dir, 'too_deep_129.json'), JSON.stringify(tooDeep));
