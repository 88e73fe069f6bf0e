import type {
	IDataObject,
	IExecuteFunctions,
	INodeExecutionData,
	INodeType,
	INodeTypeDescription,
} from 'n8n-workflow';
import { NodeOperationError } from 'n8n-workflow';

import { contactFieldsDescription, contactOperations } from './descriptions/ContactDescription';
import { enrollmentFieldsDescription, enrollmentOperations } from './descriptions/EnrollmentDescription';
import { eventQueueFieldsDescription, eventQueueOperations } from './descriptions/EventQueueDescription';
import { sequenceFieldsDescription, sequenceOperations } from './descriptions/SequenceDescription';
import { apiError, seqbridgeApiRequest, seqbridgeApiRequestAllItems } from './GenericFunctions';
import { getEventQueues, getSequences } from './loadOptions';
import type { Params, SeqbridgeRequest } from './requests';
import { buildRequest, liveEnrollmentRequest } from './requests';

export class Seqbridge implements INodeType {
	description: INodeTypeDescription = {
		displayName: 'Seqbridge',
		name: 'seqbridge',
		icon: 'file:seqbridge.svg',
		group: ['transform'],
		version: 1,
		subtitle: '={{$parameter["operation"] + ": " + $parameter["resource"]}}',
		description: 'Manage contacts, sequences, enrollments and event queues in Seqbridge',
		defaults: {
			name: 'Seqbridge',
		},
		inputs: ['main'],
		outputs: ['main'],
		credentials: [
			{
				name: 'seqbridgeApi',
				required: true,
			},
		],
		properties: [
			{
				displayName: 'Resource',
				name: 'resource',
				type: 'options',
				noDataExpression: true,
				options: [
					{ name: 'Contact', value: 'contact' },
					{ name: 'Enrollment', value: 'enrollment' },
					{ name: 'Event Queue', value: 'eventQueue' },
					{ name: 'Sequence', value: 'sequence' },
				],
				default: 'enrollment',
			},
			...contactOperations,
			...contactFieldsDescription,
			...sequenceOperations,
			...sequenceFieldsDescription,
			...enrollmentOperations,
			...enrollmentFieldsDescription,
			...eventQueueOperations,
			...eventQueueFieldsDescription,
		],
	};

	methods = {
		loadOptions: { getSequences, getEventQueues },
	};

	async execute(this: IExecuteFunctions): Promise<INodeExecutionData[][]> {
		const items = this.getInputData();
		const returnData: INodeExecutionData[] = [];
		const properties = new Seqbridge().description.properties;

		for (let i = 0; i < items.length; i++) {
			try {
				const resource = this.getNodeParameter('resource', i) as string;
				const operation = this.getNodeParameter('operation', i) as string;
				// Every parameter shown for this resource and operation, by name.
				const params: Params = {};
				for (const property of properties) {
					if (['resource', 'operation'].includes(property.name)) continue;
					const show = property.displayOptions?.show ?? {};
					if (show.resource && !show.resource.includes(resource)) continue;
					if (show.operation && !show.operation.includes(operation)) continue;
					// null when n8n hides the parameter (displayOptions), so nothing throws for it.
					params[property.name] = this.getNodeParameter(property.name, i, null);
				}
				let call;
				try {
					call = buildRequest(resource, operation, params);
				} catch (error) {
					throw new NodeOperationError(this.getNode(), (error as Error).message, { itemIndex: i });
				}

				let results: IDataObject[];
				if (call.paginate) {
					results = await seqbridgeApiRequestAllItems.call(this, call, params.returnAll === true);
				} else if (call.liveEnrollmentOnConflict) {
					results = [await enrollOrAnswerLive.call(this, call, params.sequenceId)];
				} else {
					const { statusCode, body } = await seqbridgeApiRequest.call(this, call);
					results = statusCode === 204 ? [{ deleted: true }] : [body.data as IDataObject];
				}
				returnData.push(
					...this.helpers.constructExecutionMetaData(this.helpers.returnJsonArray(results), {
						itemData: { item: i },
					}),
				);
			} catch (error) {
				if (this.continueOnFail()) {
					returnData.push({ json: { error: (error as Error).message }, pairedItem: { item: i } });
					continue;
				}
				throw error;
			}
		}
		return [returnData];
	}
}

/**
 * Enroll; when the contact is already live in the sequence (409 `already_enrolled`, which names
 * the enrollment), answer that enrollment instead, so a retried or repeated execution never fails
 * or enrolls twice. `already_enrolled` says which happened.
 */
async function enrollOrAnswerLive(
	this: IExecuteFunctions,
	call: SeqbridgeRequest,
	sequenceId: unknown,
): Promise<IDataObject> {
	const answer = await seqbridgeApiRequest.call(this, call, [409]);
	if (answer.statusCode !== 409) return { ...(answer.body.data as IDataObject), already_enrolled: false };
	const error = (answer.body.error ?? {}) as IDataObject;
	const liveId = (error.details as IDataObject | undefined)?.enrollment_id;
	if (error.code !== 'already_enrolled' || !liveId) throw apiError(this, call, answer);
	const live = await seqbridgeApiRequest.call(this, liveEnrollmentRequest(sequenceId, liveId));
	return { ...(live.body.data as IDataObject), already_enrolled: true };
}
