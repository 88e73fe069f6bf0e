import type { INodeProperties } from 'n8n-workflow';

/** "Return All" and "Limit" for a list operation. */
export const listFields = (resource: string, operation: string, max = 100): INodeProperties[] => [
	{
		displayName: 'Return All',
		name: 'returnAll',
		type: 'boolean',
		displayOptions: { show: { resource: [resource], operation: [operation] } },
		default: false,
		description: 'Whether to return all results or only up to a given limit',
	},
	{
		displayName: 'Limit',
		name: 'limit',
		type: 'number',
		displayOptions: { show: { resource: [resource], operation: [operation], returnAll: [false] } },
		typeOptions: { minValue: 1, maxValue: max },
		default: 50,
		description: 'Max number of results to return',
	},
];

export const sequenceField = (resource: string, operations: string[], extra: Partial<INodeProperties> = {}): INodeProperties => ({
	displayName: 'Sequence Name or ID',
	name: 'sequenceId',
	type: 'options',
	typeOptions: { loadOptionsMethod: 'getSequences' },
	required: true,
	displayOptions: { show: { resource: [resource], operation: operations } },
	default: '',
	description:
		'Choose from the list, or specify an ID using an <a href="https://docs.n8n.io/code/expressions/">expression</a>',
	...extra,
});

export const queueField = (operations: string[]): INodeProperties => ({
	displayName: 'Event Queue Name or ID',
	name: 'queueId',
	type: 'options',
	typeOptions: { loadOptionsMethod: 'getEventQueues' },
	required: true,
	displayOptions: { show: { resource: ['eventQueue'], operation: operations } },
	default: '',
	description:
		'Choose from the list, or specify an ID using an <a href="https://docs.n8n.io/code/expressions/">expression</a>',
});

export const contactIdField = (resource: string, operations: string[]): INodeProperties => ({
	displayName: 'Contact ID',
	name: 'contactId',
	type: 'string',
	required: true,
	displayOptions: { show: { resource: [resource], operation: operations } },
	default: '',
	description: 'The Seqbridge ID of the contact',
});
