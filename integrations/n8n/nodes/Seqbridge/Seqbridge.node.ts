import type {
	IDataObject,
	IExecuteFunctions,
	ILoadOptionsFunctions,
	INodeExecutionData,
	INodePropertyOptions,
	INodeType,
	INodeTypeDescription,
} from 'n8n-workflow';
import { NodeConnectionTypes, NodeOperationError } from 'n8n-workflow';

import { contactFieldsDescription, contactOperations } from './descriptions/ContactDescription';
import { enrollmentFieldsDescription, enrollmentOperations } from './descriptions/EnrollmentDescription';
import { eventQueueFieldsDescription, eventQueueOperations } from './descriptions/EventQueueDescription';
import { sequenceFieldsDescription, sequenceOperations } from './descriptions/SequenceDescription';
import { seqbridgeApiRequest, seqbridgeApiRequestAllItems } from './GenericFunctions';
import type { Params } from './requests';
import { buildRequest, eventQueuesPage, sequencesPage } from './requests';

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
		inputs: [NodeConnectionTypes.Main],
		outputs: [NodeConnectionTypes.Main],
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
		loadOptions: {
			/** Sequences for the dropdowns; archived ones cannot enroll and are left out. */
			async getSequences(this: ILoadOptionsFunctions): Promise<INodePropertyOptions[]> {
				const options: INodePropertyOptions[] = [];
				for (let offset: number | null = 0; offset !== null && options.length < 2000; ) {
					const { body }: { body: IDataObject } = await seqbridgeApiRequest.call(this, sequencesPage(offset));
					for (const sequence of body.data as IDataObject[]) {
						if (sequence.status === 'archived') continue;
						const name = sequence.status === 'active' ? sequence.name : `${sequence.name} (${sequence.status})`;
						options.push({ name: String(name), value: String(sequence.id) });
					}
					offset = ((body.meta as IDataObject).next_offset as number | null) ?? null;
				}
				return options.sort((a, b) => a.name.localeCompare(b.name));
			},

			async getEventQueues(this: ILoadOptionsFunctions): Promise<INodePropertyOptions[]> {
				const options: INodePropertyOptions[] = [];
				let cursor: string | undefined;
				do {
					const { body }: { body: IDataObject } = await seqbridgeApiRequest.call(this, eventQueuesPage(cursor));
					for (const queue of body.data as IDataObject[]) {
						if (queue.status === 'archived') continue;
						options.push({ name: String(queue.name), value: String(queue.id) });
					}
					cursor = ((body.meta as IDataObject).next_cursor as string | null) ?? undefined;
				} while (cursor && options.length < 2000);
				return options.sort((a, b) => a.name.localeCompare(b.name));
			},
		},
	};

	async execute(this: IExecuteFunctions): Promise<INodeExecutionData[][]> {
		const items = this.getInputData();
		const returnData: INodeExecutionData[] = [];
		const properties = this.getNode().typeVersion ? new Seqbridge().description.properties : [];

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
					params[property.name] = this.getNodeParameter(property.name, i, undefined);
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
