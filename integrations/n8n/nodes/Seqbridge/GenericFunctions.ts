import type {
	IDataObject,
	IExecuteFunctions,
	IHookFunctions,
	IHttpRequestOptions,
	ILoadOptionsFunctions,
	JsonObject,
} from 'n8n-workflow';
import { NodeApiError, sleep } from 'n8n-workflow';

import type { SeqbridgeRequest } from './requests';

type Context = IExecuteFunctions | ILoadOptionsFunctions | IHookFunctions;

interface Answer {
	statusCode: number;
	headers: IDataObject;
	body: IDataObject;
}

/** Waits this long at most for a 429's Retry-After before giving up with the error. */
const MAX_RETRY_WAIT_SECONDS = 30;

/**
 * One call to Seqbridge with the node's credentials. Answers the parsed body; statuses in
 * `allow` are answered too (`{statusCode, body}`) instead of failing. A 429 is retried after
 * its Retry-After (up to 30 s, twice); any other error becomes a NodeApiError that shows
 * Seqbridge's code and message.
 */
export async function seqbridgeApiRequest(
	this: Context,
	call: SeqbridgeRequest,
	allow: number[] = [],
): Promise<Answer> {
	const credentials = await this.getCredentials('seqbridgeApi');
	const baseUrl = String(credentials.baseUrl).trim().replace(/\/+$/, '');
	const options: IHttpRequestOptions = {
		method: call.method,
		url: `${baseUrl}${call.path}`,
		qs: call.qs,
		body: call.body,
		json: true,
		headers: { Accept: 'application/json', 'User-Agent': 'n8n-nodes-seqbridge' },
		returnFullResponse: true,
		ignoreHttpStatusErrors: true,
	};
	for (let attempt = 1; ; attempt++) {
		const answer = (await this.helpers.httpRequestWithAuthentication.call(
			this,
			'seqbridgeApi',
			options,
		)) as Answer;
		const status = answer.statusCode;
		if (status < 400 || allow.includes(status)) {
			return answer;
		}
		const retryAfter = Number(answer.headers?.['retry-after']);
		if (status === 429 && attempt < 3 && retryAfter >= 0 && retryAfter <= MAX_RETRY_WAIT_SECONDS) {
			await sleep(retryAfter * 1000);
			continue;
		}
		throw apiError(this, call, answer);
	}
}

/** Seqbridge's error envelope ({"error": {"code", "message", "details"}}) as a NodeApiError. */
export function apiError(context: Context, call: SeqbridgeRequest, answer: Answer): NodeApiError {
	const error = (answer.body?.error ?? {}) as IDataObject;
	const code = String(error.code ?? `http_${answer.statusCode}`);
	const details = (error.details ?? {}) as IDataObject;
	const problems = Array.isArray(details.errors)
		? (details.errors as IDataObject[]).map((p) => `${p.path ?? ''}: ${p.message ?? ''}`)
		: [];
	const reason = details.reason ? ` (${details.reason})` : '';
	const message = error.message
		? `${error.message}${reason}`
		: `Seqbridge answered HTTP ${answer.statusCode} to ${call.method} ${call.path}`;
	const hints: Record<string, string> = {
		'401': 'Check the API key in the Seqbridge credentials: it may be mistyped or revoked.',
		'403': `The API key lacks the scope this needs${details.required_scope ? ` (${details.required_scope})` : ''}.`,
		'429': 'Seqbridge asked to slow down; retry later or enable Retry On Fail.',
	};
	return new NodeApiError(context.getNode(), { ...(answer.body as JsonObject), code } as JsonObject, {
		message: `${code}: ${message}`,
		description: [problems.join('; '), hints[String(answer.statusCode)]].filter(Boolean).join(' ') || undefined,
		httpCode: String(answer.statusCode),
	});
}

/**
 * A list, following Seqbridge's pages (`meta.next_offset` or `meta.next_cursor`) until the end,
 * or only its first page (of `qs.limit` items) unless `returnAll`.
 */
export async function seqbridgeApiRequestAllItems(
	this: Context,
	call: SeqbridgeRequest,
	returnAll: boolean,
): Promise<IDataObject[]> {
	const items: IDataObject[] = [];
	const qs: IDataObject = { ...(call.qs ?? {}) };
	if (returnAll) qs.limit = call.paginate === 'cursor' && call.path.endsWith('/enrollments') ? 200 : 100;
	for (;;) {
		const { body } = await seqbridgeApiRequest.call(this, { ...call, qs });
		items.push(...((body.data as IDataObject[]) ?? []));
		const meta = (body.meta ?? {}) as IDataObject;
		if (!returnAll) return items;
		if (call.paginate === 'cursor' && meta.next_cursor) {
			qs.cursor = meta.next_cursor;
		} else if (call.paginate === 'offset' && meta.next_offset !== null && meta.next_offset !== undefined) {
			qs.offset = meta.next_offset;
		} else {
			return items;
		}
	}
}
