import type {
	IDataObject,
	IHookFunctions,
	INodeType,
	INodeTypeDescription,
	IWebhookFunctions,
	IWebhookResponseData,
} from 'n8n-workflow';

import { seqbridgeApiRequest } from '../Seqbridge/GenericFunctions';
import { getSequences } from '../Seqbridge/loadOptions';
import { subscribeRequest, subscriptionRequest, unsubscribeRequest } from '../Seqbridge/requests';
import { signatureProblem } from './signature';

/** What the node keeps in the workflow's static data about its Seqbridge subscription. */
interface Subscription extends IDataObject {
	subscriptionId?: string;
	secret?: string;
	event?: string;
	targetUrl?: string;
}

const ENROLLMENT_EVENTS = ['enrollment.created', 'enrollment.completed', 'enrollment.exited'];

export class SeqbridgeTrigger implements INodeType {
	description: INodeTypeDescription = {
		displayName: 'Seqbridge Trigger',
		name: 'seqbridgeTrigger',
		icon: 'file:seqbridge.svg',
		group: ['trigger'],
		version: 1,
		subtitle: '={{$parameter["event"]}}',
		description: 'Starts the workflow when Seqbridge reports an enrollment, unsubscribe or dead delivery',
		defaults: {
			name: 'Seqbridge Trigger',
		},
		inputs: [],
		outputs: ['main'],
		credentials: [
			{
				name: 'seqbridgeApi',
				required: true,
			},
		],
		webhooks: [
			{
				name: 'default',
				httpMethod: 'POST',
				responseMode: 'onReceived',
				path: 'webhook',
			},
		],
		properties: [
			{
				displayName: 'Event',
				name: 'event',
				type: 'options',
				required: true,
				options: [
					{ name: 'Contact Unsubscribed', value: 'contact.unsubscribed' },
					{ name: 'Delivery Dead', value: 'delivery.dead', description: 'An incoming webhook failed after every retry' },
					{ name: 'Enrollment Completed', value: 'enrollment.completed' },
					{ name: 'Enrollment Created', value: 'enrollment.created' },
					{ name: 'Enrollment Exited', value: 'enrollment.exited', description: 'Replied, converted, unsubscribed, bounced or removed' },
				],
				default: 'enrollment.created',
			},
			{
				displayName: 'Only for Sequence Name or ID',
				name: 'sequenceId',
				type: 'options',
				typeOptions: { loadOptionsMethod: 'getSequences' },
				displayOptions: { show: { event: ENROLLMENT_EVENTS } },
				default: '',
				description:
					'Leave empty for every sequence. Choose from the list, or specify an ID using an <a href="https://docs.n8n.io/code/expressions/">expression</a>.',
			},
		],
	};

	methods = {
		loadOptions: { getSequences },
	};

	webhookMethods = {
		default: {
			/** True when Seqbridge still has this node's subscription, for this URL and event. */
			async checkExists(this: IHookFunctions): Promise<boolean> {
				const stored = this.getWorkflowStaticData('node') as Subscription;
				if (!stored.subscriptionId) return false;
				const { statusCode, body } = await seqbridgeApiRequest.call(
					this,
					subscriptionRequest(stored.subscriptionId),
					[404],
				);
				const current = (body?.data ?? {}) as IDataObject;
				const same =
					statusCode === 200 &&
					current.status === 'active' &&
					current.target_url === this.getNodeWebhookUrl('default') &&
					current.event === this.getNodeParameter('event') &&
					Boolean(stored.secret);
				if (same) return true;
				if (statusCode === 200) {
					// Another event or URL, or disabled after failing for a day: start afresh.
					await seqbridgeApiRequest.call(this, unsubscribeRequest(stored.subscriptionId), [404]);
				}
				for (const key of ['subscriptionId', 'secret', 'event', 'targetUrl']) delete stored[key];
				return false;
			},

			/** Subscribe the webhook URL; keep the subscription's id and signing secret. */
			async create(this: IHookFunctions): Promise<boolean> {
				const targetUrl = this.getNodeWebhookUrl('default') as string;
				const event = this.getNodeParameter('event') as string;
				const { body } = await seqbridgeApiRequest.call(this, subscribeRequest(targetUrl, event));
				const created = body.data as IDataObject;
				const stored = this.getWorkflowStaticData('node') as Subscription;
				stored.subscriptionId = String(created.id);
				stored.secret = String(created.secret);
				stored.event = event;
				stored.targetUrl = targetUrl;
				return true;
			},

			/** Unsubscribe; one already gone (404) is fine. */
			async delete(this: IHookFunctions): Promise<boolean> {
				const stored = this.getWorkflowStaticData('node') as Subscription;
				if (stored.subscriptionId) {
					await seqbridgeApiRequest.call(this, unsubscribeRequest(stored.subscriptionId), [404]);
				}
				for (const key of ['subscriptionId', 'secret', 'event', 'targetUrl']) delete stored[key];
				return true;
			},
		},
	};

	async webhook(this: IWebhookFunctions): Promise<IWebhookResponseData> {
		const request = this.getRequestObject();
		const stored = this.getWorkflowStaticData('node') as Subscription;
		const rawBody = request.rawBody ? request.rawBody.toString('utf8') : JSON.stringify(request.body ?? {});
		const problem = stored.secret
			? signatureProblem(stored.secret, request.headers as Record<string, unknown>, rawBody)
			: 'this workflow holds no subscription secret; deactivate and activate it again';
		if (problem) {
			this.getResponseObject()
				.status(401)
				.json({ error: { code: 'invalid_signature', message: `Refused: ${problem}.` } });
			return { noWebhookResponse: true };
		}
		const notification = (request.body ?? {}) as IDataObject;
		const data = (notification.data ?? {}) as IDataObject;
		const event = this.getNodeParameter('event') as string;
		const sequenceId = ENROLLMENT_EVENTS.includes(event) ? (this.getNodeParameter('sequenceId', '') as string) : '';
		const sequence = (data.sequence ?? {}) as IDataObject;
		if (notification.type !== event || (sequenceId && data.sequence_id !== sequenceId && sequence.id !== sequenceId)) {
			return { webhookResponse: { ignored: true } }; // answered 200, nothing runs
		}
		return { workflowData: [this.helpers.returnJsonArray([notification])] };
	}
}
