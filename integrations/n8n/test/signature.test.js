'use strict';
// The trigger's Standard Webhooks check, against signatures made with the scheme's own library.
const test = require('node:test');
const assert = require('node:assert/strict');
const { Webhook } = require('standardwebhooks');

const { signatureProblem } = require('../dist/nodes/SeqbridgeTrigger/signature');

const secret = `whsec_${Buffer.from('a'.repeat(32)).toString('base64')}`;
const body = JSON.stringify({ id: 'evt_1', type: 'enrollment.created', data: { id: 'e1' } });

const signed = (at = new Date()) => {
	const id = 'msg_2Lz';
	const signature = new Webhook(secret).sign(id, at, body);
	return { 'webhook-id': id, 'webhook-timestamp': String(Math.floor(at.getTime() / 1000)), 'webhook-signature': signature };
};

test('a notification signed with the subscription secret passes', () => {
	assert.equal(signatureProblem(secret, signed(), body), null);
	// Several signatures (secret rotation): any v1 that matches will do.
	const headers = signed();
	headers['webhook-signature'] = `v1,${Buffer.alloc(32).toString('base64')} ${headers['webhook-signature']}`;
	assert.equal(signatureProblem(secret, headers, body), null);
});

test('altered bodies, other secrets, stale timestamps and missing headers are refused', () => {
	assert.match(signatureProblem(secret, signed(), body.replace('e1', 'e2')), /does not match/);
	const other = `whsec_${Buffer.from('b'.repeat(32)).toString('base64')}`;
	assert.match(signatureProblem(other, signed(), body), /does not match/);
	assert.match(signatureProblem(secret, signed(new Date(Date.now() - 10 * 60 * 1000)), body), /five minutes/);
	const headers = signed();
	delete headers['webhook-signature'];
	assert.match(signatureProblem(secret, headers, body), /headers are required/);
	assert.match(signatureProblem(secret, { ...signed(), 'webhook-signature': 'v2,abc' }, body), /does not match/);
});
