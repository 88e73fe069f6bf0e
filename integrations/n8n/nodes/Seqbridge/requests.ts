// What each resource and operation sends to Seqbridge, as plain data (no n8n calls here, so unit
// tests can check every request). integrations/contract.json lists these calls; a test keeps the
// two in step, and another checks the list against Seqbridge's openapi.yaml.

import type { IDataObject } from 'n8n-workflow';

export type Method = 'GET' | 'POST' | 'PATCH' | 'DELETE';

export interface SeqbridgeRequest {
	method: Method;
	path: string;
	qs?: IDataObject;
	body?: IDataObject;
	/** How a list pages: by `offset` (meta.next_offset) or by `cursor` (meta.next_cursor). */
	paginate?: 'offset' | 'cursor';
	/** An enroll that answers the live enrollment when Seqbridge says `already_enrolled` (409). */
	liveEnrollmentOnConflict?: boolean;
}

export type Params = Record<string, unknown>;

const request = (
	method: Method,
	path: string,
	extra: Omit<SeqbridgeRequest, 'method' | 'path'> = {},
): SeqbridgeRequest => ({ method, path, ...extra });

const id = (value: unknown, what: string): string => {
	const text = String(value ?? '').trim();
	if (!text) {
		throw new Error(`${what} is required`);
	}
	return encodeURIComponent(text);
};

/** Drop empty values: n8n gives '' for fields left blank, and Seqbridge would store them. */
export const compact = (values: IDataObject | undefined): IDataObject => {
	const out: IDataObject = {};
	for (const [key, value] of Object.entries(values ?? {})) {
		if (value === '' || value === undefined || value === null) continue;
		if (Array.isArray(value) && value.length === 0) continue;
		out[key] = value;
	}
	return out;
};

/** A comma- or newline-separated list (or an array) as trimmed, unique strings. */
export const list = (value: unknown): string[] => {
	const items = Array.isArray(value) ? value : String(value ?? '').split(/[\n,]/);
	return [...new Set(items.map((item) => String(item).trim()).filter(Boolean))];
};

/** A JSON object given as text or as an object; throws a readable error otherwise. */
export const jsonObject = (value: unknown, what: string): IDataObject | undefined => {
	if (value === undefined || value === null || value === '') return undefined;
	const parsed = typeof value === 'string' ? JSON.parse(value) : value;
	if (typeof parsed !== 'object' || Array.isArray(parsed) || parsed === null) {
		throw new Error(`${what} must be a JSON object`);
	}
	return Object.keys(parsed).length ? (parsed as IDataObject) : undefined;
};

const contactFields = (p: Params): IDataObject => {
	const fields = compact(p.fields as IDataObject);
	if (fields.tags !== undefined) fields.tags = list(fields.tags);
	if (fields.attributes !== undefined) {
		const attributes = jsonObject(fields.attributes, 'Custom Attributes');
		if (attributes) fields.attributes = attributes;
		else delete fields.attributes;
	}
	return fields;
};

const listQuery = (p: Params, filters: IDataObject | undefined): IDataObject => {
	const qs = compact(filters);
	if (!p.returnAll) qs.limit = p.limit ?? 50;
	return qs;
};

/** The request for `resource` / `operation` with the node's parameters `p`. */
export function buildRequest(resource: string, operation: string, p: Params): SeqbridgeRequest {
	const key = `${resource}:${operation}`;
	switch (key) {
		// Contacts -----------------------------------------------------------------------------
		case 'contact:create': {
			const body = { ...contactFields(p), ...compact({ email: p.email, phone: p.phone } as IDataObject) };
			if (!body.email && !body.phone) throw new Error('A contact needs an email or a phone');
			return request('POST', '/api/v1/contacts', { body });
		}
		case 'contact:get':
			return request('GET', `/api/v1/contacts/${id(p.contactId, 'Contact ID')}`);
		case 'contact:getAll':
			return request('GET', '/api/v1/contacts', {
				qs: listQuery(p, p.filters as IDataObject),
				paginate: 'offset',
			});
		case 'contact:update': {
			const body = contactFields({ fields: p.updateFields });
			if (!Object.keys(body).length) throw new Error('Choose at least one field to update');
			return request('PATCH', `/api/v1/contacts/${id(p.contactId, 'Contact ID')}`, { body });
		}
		case 'contact:delete':
			return request('DELETE', `/api/v1/contacts/${id(p.contactId, 'Contact ID')}`);

		// Sequences ----------------------------------------------------------------------------
		case 'sequence:create':
			return request('POST', '/api/v1/sequences', {
				body: { name: String(p.name ?? '').trim(), ...compact(p.additionalFields as IDataObject) },
			});
		case 'sequence:get':
			return request('GET', `/api/v1/sequences/${id(p.sequenceId, 'Sequence')}`);
		case 'sequence:getAll':
			return request('GET', '/api/v1/sequences', {
				qs: listQuery(p, p.filters as IDataObject),
				paginate: 'offset',
			});
		case 'sequence:update': {
			const body = compact(p.updateFields as IDataObject);
			if (!Object.keys(body).length) throw new Error('Choose at least one field to update');
			return request('PATCH', `/api/v1/sequences/${id(p.sequenceId, 'Sequence')}`, { body });
		}

		// Enrollments --------------------------------------------------------------------------
		case 'enrollment:enroll': {
			const body: IDataObject = {};
			if (p.identifyBy === 'contactId') body.contact_id = String(p.contactId ?? '').trim();
			else body.email = String(p.email ?? '').trim();
			if (!body.contact_id && !body.email) throw new Error('Give the contact to enroll');
			const options = (p.options as IDataObject) ?? {};
			body.enrollment_source = String(options.enrollmentSource || 'n8n');
			const data = jsonObject(options.enrollmentData, 'Enrollment Data');
			if (data) body.enrollment_data = data;
			return request('POST', `/api/v1/sequences/${id(p.sequenceId, 'Sequence')}/enroll`, {
				body,
				liveEnrollmentOnConflict: options.ifEnrolled !== 'error',
			});
		}
		case 'enrollment:bulkEnroll': {
			const body = compact({ customer_ids: list(p.contactIds), emails: list(p.emails) } as IDataObject);
			const total = list(p.contactIds).length + list(p.emails).length;
			if (!total) throw new Error('Give at least one contact ID or email');
			if (total > 1000) throw new Error(`At most 1000 contacts per call (got ${total})`);
			body.enrollment_source = String(p.enrollmentSource || 'n8n_bulk');
			return request('POST', `/api/v1/sequences/${id(p.sequenceId, 'Sequence')}/enroll_bulk`, { body });
		}
		case 'enrollment:getAll':
			return request('GET', `/api/v1/sequences/${id(p.sequenceId, 'Sequence')}/enrollments`, {
				qs: listQuery(p, p.filters as IDataObject),
				paginate: 'offset',
			});
		case 'enrollment:get':
			return request(
				'GET',
				`/api/v1/sequences/${id(p.sequenceId, 'Sequence')}/enrollments/${id(p.enrollmentId, 'Enrollment ID')}`,
			);
		case 'enrollment:update':
			return request(
				'PATCH',
				`/api/v1/sequences/${id(p.sequenceId, 'Sequence')}/enrollments/${id(p.enrollmentId, 'Enrollment ID')}`,
				{ body: { status: p.status === 'paused' ? 'paused' : 'active' } },
			);
		case 'enrollment:unenroll': {
			const body: IDataObject = { reason: String(p.reason || 'manual') };
			if (p.scope === 'sequence') body.sequence_id = String(p.sequenceId ?? '').trim();
			return request('POST', `/api/v1/contacts/${id(p.contactId, 'Contact ID')}/unenroll`, { body });
		}

		// Event queues -------------------------------------------------------------------------
		case 'eventQueue:get':
			return request('GET', `/api/v1/event-queues/${id(p.queueId, 'Event Queue')}`);
		case 'eventQueue:getAll':
			return request('GET', '/api/v1/event-queues', {
				qs: listQuery(p, p.filters as IDataObject),
				paginate: 'cursor',
			});
		case 'eventQueue:bulkEnroll': {
			const contactIds = list(p.contactIds);
			if (!contactIds.length) throw new Error('Give at least one contact ID');
			if (contactIds.length > 500) throw new Error(`At most 500 contacts per call (got ${contactIds.length})`);
			const body: IDataObject = { contact_ids: contactIds, ...compact(p.options as IDataObject) };
			body.enrollment_source ??= 'n8n';
			return request('POST', `/api/v1/event-queues/${id(p.queueId, 'Event Queue')}/bulk-enroll`, { body });
		}
		case 'eventQueue:unenroll':
			return request('POST', `/api/v1/event-queues/${id(p.queueId, 'Event Queue')}/unenroll`, {
				body: { contact_id: String(p.contactId ?? '').trim() },
			});
		case 'eventQueue:getTasks':
			return request('GET', `/api/v1/event-queues/${id(p.queueId, 'Event Queue')}/enrollments`, {
				qs: listQuery(p, p.filters as IDataObject),
				paginate: 'cursor',
			});
	}
	throw new Error(`Unknown operation ${operation} of ${resource}`);
}

// REST hooks, for the trigger -------------------------------------------------------------

/** The live enrollment a 409 `already_enrolled` named (`details.enrollment_id`). */
export const liveEnrollmentRequest = (sequenceId: unknown, enrollmentId: unknown): SeqbridgeRequest =>
	request('GET', `/api/v1/sequences/${id(sequenceId, 'Sequence')}/enrollments/${id(enrollmentId, 'Enrollment ID')}`);

export const subscribeRequest = (targetUrl: string, event: string): SeqbridgeRequest =>
	request('POST', '/api/v1/hooks/subscriptions', { body: { target_url: targetUrl, event } });

export const subscriptionRequest = (subscriptionId: string): SeqbridgeRequest =>
	request('GET', `/api/v1/hooks/subscriptions/${id(subscriptionId, 'Subscription ID')}`);

export const unsubscribeRequest = (subscriptionId: string): SeqbridgeRequest =>
	request('DELETE', `/api/v1/hooks/subscriptions/${id(subscriptionId, 'Subscription ID')}`);

// Option loaders ----------------------------------------------------------------------------

export const sequencesPage = (offset: number): SeqbridgeRequest =>
	request('GET', '/api/v1/sequences', { qs: { limit: 100, offset } });

export const eventQueuesPage = (cursor?: string): SeqbridgeRequest =>
	request('GET', '/api/v1/event-queues', { qs: cursor ? { limit: 100, cursor } : { limit: 100 } });
