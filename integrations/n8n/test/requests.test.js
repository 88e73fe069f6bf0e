'use strict';
// Unit tests of the request building: what each operation sends to Seqbridge.
const test = require('node:test');
const assert = require('node:assert/strict');

const { buildRequest, compact, list, jsonObject, liveEnrollmentRequest } = require('../dist/nodes/Seqbridge/requests');
const { Seqbridge } = require('../dist/nodes/Seqbridge/Seqbridge.node');

test('contacts: create drops blank fields, splits tags and parses attributes', () => {
	const call = buildRequest('contact', 'create', {
		email: 'ada@example.com',
		phone: '',
		fields: { first_name: 'Ada', last_name: '', tags: 'vip, lead,vip', attributes: '{"plan":"pro"}' },
	});
	assert.deepEqual(call, {
		method: 'POST',
		path: '/api/v1/contacts',
		body: { first_name: 'Ada', tags: ['vip', 'lead'], attributes: { plan: 'pro' }, email: 'ada@example.com' },
	});
	assert.throws(() => buildRequest('contact', 'create', { fields: {} }), /email or a phone/);
	assert.throws(() => buildRequest('contact', 'update', { contactId: 'c1', updateFields: {} }), /at least one field/);
});

test('contacts: ids are path-encoded and lists page by offset', () => {
	assert.equal(buildRequest('contact', 'get', { contactId: 'a/b' }).path, '/api/v1/contacts/a%2Fb');
	assert.deepEqual(buildRequest('contact', 'getAll', { returnAll: false, limit: 5, filters: { tag: 'vip', email: '' } }), {
		method: 'GET',
		path: '/api/v1/contacts',
		qs: { tag: 'vip', limit: 5 },
		paginate: 'offset',
	});
	assert.deepEqual(buildRequest('contact', 'getAll', { returnAll: true, filters: {} }).qs, {});
	assert.equal(buildRequest('contact', 'delete', { contactId: 'c1' }).method, 'DELETE');
	assert.throws(() => buildRequest('contact', 'get', { contactId: ' ' }), /Contact ID is required/);
});

test('enrollments: enroll by email or id, with source and data', () => {
	assert.deepEqual(buildRequest('enrollment', 'enroll', { sequenceId: 's1', identifyBy: 'email', email: ' ada@example.com ', options: {} }), {
		method: 'POST',
		path: '/api/v1/sequences/s1/enroll',
		body: { email: 'ada@example.com', enrollment_source: 'n8n' },
		liveEnrollmentOnConflict: true,
	});
	const byId = buildRequest('enrollment', 'enroll', {
		sequenceId: 's1',
		identifyBy: 'contactId',
		contactId: 'c1',
		options: { enrollmentSource: 'crm', enrollmentData: '{"campaign":"spring"}' },
	});
	assert.deepEqual(byId.body, { contact_id: 'c1', enrollment_source: 'crm', enrollment_data: { campaign: 'spring' } });
	// Already enrolled: answer the live enrollment (the default), or fail when asked to.
	const strict = buildRequest('enrollment', 'enroll', { sequenceId: 's1', identifyBy: 'contactId', contactId: 'c1', options: { ifEnrolled: 'error' } });
	assert.equal(strict.liveEnrollmentOnConflict, false);
	assert.deepEqual(liveEnrollmentRequest('s 1', 'e1'), { method: 'GET', path: '/api/v1/sequences/s%201/enrollments/e1' });
	assert.throws(() => buildRequest('enrollment', 'enroll', { sequenceId: 's1', identifyBy: 'email', email: '' }), /contact to enroll/);
	assert.throws(
		() => buildRequest('enrollment', 'enroll', { sequenceId: 's1', identifyBy: 'contactId', contactId: 'c', options: { enrollmentData: '[1]' } }),
		/must be a JSON object/,
	);
});

test('enrollments: bulk enroll, pause/resume, unenroll from one sequence or everywhere', () => {
	assert.deepEqual(buildRequest('enrollment', 'bulkEnroll', { sequenceId: 's1', contactIds: 'c1,c2', emails: 'a@x.co\nb@x.co', enrollmentSource: '' }).body, {
		customer_ids: ['c1', 'c2'],
		emails: ['a@x.co', 'b@x.co'],
		enrollment_source: 'n8n_bulk',
	});
	assert.throws(() => buildRequest('enrollment', 'bulkEnroll', { sequenceId: 's1', contactIds: '', emails: '' }), /at least one/);
	const tooMany = Array.from({ length: 1001 }, (_, n) => `c${n}`).join(',');
	assert.throws(() => buildRequest('enrollment', 'bulkEnroll', { sequenceId: 's1', contactIds: tooMany }), /At most 1000/);
	assert.deepEqual(buildRequest('enrollment', 'update', { sequenceId: 's1', enrollmentId: 'e1', status: 'paused' }), {
		method: 'PATCH',
		path: '/api/v1/sequences/s1/enrollments/e1',
		body: { status: 'paused' },
	});
	assert.deepEqual(buildRequest('enrollment', 'unenroll', { contactId: 'c1', scope: 'sequence', sequenceId: 's1', reason: 'replied' }), {
		method: 'POST',
		path: '/api/v1/contacts/c1/unenroll',
		body: { reason: 'replied', sequence_id: 's1' },
	});
	assert.deepEqual(buildRequest('enrollment', 'unenroll', { contactId: 'c1', scope: 'all', sequenceId: 's1', reason: '' }).body, { reason: 'manual' });
	assert.equal(buildRequest('enrollment', 'getAll', { sequenceId: 's1', returnAll: true, filters: { status: 'active' } }).qs.status, 'active');
});

test('event queues: bulk enroll (at most 500), unenroll, and cursor pages', () => {
	assert.deepEqual(buildRequest('eventQueue', 'bulkEnroll', { queueId: 'q1', contactIds: 'c1, c1, c2', options: { deal_id: 'd9', enrollment_time: '' } }), {
		method: 'POST',
		path: '/api/v1/event-queues/q1/bulk-enroll',
		body: { contact_ids: ['c1', 'c2'], deal_id: 'd9', enrollment_source: 'n8n' },
	});
	const tooMany = Array.from({ length: 501 }, (_, n) => `c${n}`).join(',');
	assert.throws(() => buildRequest('eventQueue', 'bulkEnroll', { queueId: 'q1', contactIds: tooMany, options: {} }), /At most 500/);
	assert.deepEqual(buildRequest('eventQueue', 'unenroll', { queueId: 'q1', contactId: 'c1' }).body, { contact_id: 'c1' });
	assert.equal(buildRequest('eventQueue', 'getTasks', { queueId: 'q1', returnAll: true, filters: {} }).paginate, 'cursor');
	assert.equal(buildRequest('eventQueue', 'getAll', { returnAll: true, filters: {} }).paginate, 'cursor');
});

test('every operation the node offers builds a request', () => {
	const { properties } = new Seqbridge().description;
	const resources = properties.find((p) => p.name === 'resource').options.map((o) => o.value);
	const filled = {
		contactId: 'c1', sequenceId: 's1', queueId: 'q1', enrollmentId: 'e1', email: 'a@x.co', name: 'N',
		identifyBy: 'email', contactIds: 'c1', emails: '', fields: {}, updateFields: { first_name: 'A', name: 'B' },
		filters: {}, options: {}, returnAll: true, scope: 'all', reason: 'manual', status: 'paused',
	};
	let count = 0;
	for (const resource of resources) {
		const operations = properties.find((p) => p.name === 'operation' && p.displayOptions.show.resource.includes(resource));
		for (const { value } of operations.options) {
			const call = buildRequest(resource, value, filled);
			assert.match(call.path, /^\/api\/v1\//, `${resource}:${value}`);
			count++;
		}
	}
	assert.equal(count, 20);
	assert.throws(() => buildRequest('contact', 'explode', {}), /Unknown operation/);
});

test('helpers', () => {
	assert.deepEqual(compact({ a: '', b: 0, c: [], d: null, e: 'x' }), { b: 0, e: 'x' });
	assert.deepEqual(list([' a ', 'b', 'a']), ['a', 'b']);
	assert.equal(jsonObject('{}', 'X'), undefined);
	assert.throws(() => jsonObject('{nope', 'X'));
});
