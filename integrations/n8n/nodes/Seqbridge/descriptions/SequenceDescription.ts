import type { INodeProperties } from 'n8n-workflow';

import { listFields, sequenceField } from './shared';

const STATUS_OPTIONS = [
	{ name: 'Active', value: 'active' },
	{ name: 'Archived', value: 'archived' },
	{ name: 'Draft', value: 'draft' },
	{ name: 'Paused', value: 'paused' },
];

const sequenceFields: INodeProperties[] = [
	{ displayName: 'Description', name: 'description', type: 'string', default: '' },
	{ displayName: 'From Email', name: 'from_email', type: 'string', placeholder: 'name@email.com', default: '' },
	{ displayName: 'From Name', name: 'from_name', type: 'string', default: '' },
	{ displayName: 'Reply-To Email', name: 'reply_to_email', type: 'string', placeholder: 'name@email.com', default: '' },
];

export const sequenceOperations: INodeProperties[] = [
	{
		displayName: 'Operation',
		name: 'operation',
		type: 'options',
		noDataExpression: true,
		displayOptions: { show: { resource: ['sequence'] } },
		options: [
			{ name: 'Create', value: 'create', action: 'Create a sequence', description: 'Create a sequence (as a draft)' },
			{ name: 'Get', value: 'get', action: 'Get a sequence', description: 'Get a sequence with its steps' },
			{ name: 'Get Many', value: 'getAll', action: 'Get many sequences', description: 'List sequences' },
			{ name: 'Update', value: 'update', action: 'Update a sequence', description: 'Rename, activate, pause or archive a sequence' },
		],
		default: 'getAll',
	},
];

export const sequenceFieldsDescription: INodeProperties[] = [
	{
		displayName: 'Name',
		name: 'name',
		type: 'string',
		required: true,
		displayOptions: { show: { resource: ['sequence'], operation: ['create'] } },
		default: '',
	},
	{
		displayName: 'Additional Fields',
		name: 'additionalFields',
		type: 'collection',
		placeholder: 'Add Field',
		displayOptions: { show: { resource: ['sequence'], operation: ['create'] } },
		default: {},
		options: sequenceFields,
	},
	sequenceField('sequence', ['get', 'update']),
	{
		displayName: 'Update Fields',
		name: 'updateFields',
		type: 'collection',
		placeholder: 'Add Field',
		displayOptions: { show: { resource: ['sequence'], operation: ['update'] } },
		default: {},
		options: [
			...sequenceFields,
			{ displayName: 'Name', name: 'name', type: 'string', default: '' },
			{
				displayName: 'Status',
				name: 'status',
				type: 'options',
				options: STATUS_OPTIONS,
				default: 'active',
				description: 'Activating needs at least one step',
			},
		],
	},
	...listFields('sequence', 'getAll'),
	{
		displayName: 'Filters',
		name: 'filters',
		type: 'collection',
		placeholder: 'Add Filter',
		displayOptions: { show: { resource: ['sequence'], operation: ['getAll'] } },
		default: {},
		options: [{ displayName: 'Status', name: 'status', type: 'options', options: STATUS_OPTIONS, default: 'active' }],
	},
];
