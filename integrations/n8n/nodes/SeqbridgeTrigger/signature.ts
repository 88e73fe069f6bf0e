import { createHmac, timingSafeEqual } from 'crypto';

/** How far a notification's webhook-timestamp may be from now, as Standard Webhooks advises. */
export const TOLERANCE_SECONDS = 5 * 60;

const header = (headers: Record<string, unknown>, name: string): string => {
	const value = headers[name] ?? headers[name.toLowerCase()];
	return String(Array.isArray(value) ? value[0] : (value ?? '')).trim();
};

/**
 * Checks a Standard Webhooks signature: HMAC-SHA256 over `${webhook-id}.${webhook-timestamp}.${body}`
 * with the secret (`whsec_` + base64), against each `v1,<base64>` in webhook-signature.
 * Returns null when it holds, else why not.
 */
export function signatureProblem(
	secret: string,
	headers: Record<string, unknown>,
	rawBody: string,
	nowSeconds = Math.floor(Date.now() / 1000),
): string | null {
	const id = header(headers, 'webhook-id');
	const timestamp = header(headers, 'webhook-timestamp');
	const signatures = header(headers, 'webhook-signature');
	if (!id || !timestamp || !signatures) {
		return 'the webhook-id, webhook-timestamp and webhook-signature headers are required';
	}
	const sentAt = Number(timestamp);
	if (!/^\d+$/.test(timestamp) || Math.abs(nowSeconds - sentAt) > TOLERANCE_SECONDS) {
		return 'the webhook-timestamp is missing, malformed, or more than five minutes from now';
	}
	const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
	const expected = createHmac('sha256', key).update(`${id}.${timestamp}.${rawBody}`).digest();
	for (const part of signatures.split(' ')) {
		const [version, value] = part.split(',', 2);
		if (version !== 'v1' || !value) continue;
		const given = Buffer.from(value, 'base64');
		if (given.length === expected.length && timingSafeEqual(given, expected)) {
			return null;
		}
	}
	return 'the signature does not match this subscription\'s secret';
}
