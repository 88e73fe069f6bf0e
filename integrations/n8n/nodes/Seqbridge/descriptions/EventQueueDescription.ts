import type { INodeProperties } from 'n8n-workflow';

import { contactIdField, listFields, queueField } from './shared';

export const eventQueueOperations: INodeProperties[] = [
	{
		displayName: 'Operation',
		name: 'operation',
		type: 'options',
		noDataExpression: true,
		displayOptions: { show: { resource: ['eventQueue'] } },
		options: [
			{ name: 'Bulk Enroll', value: 'bulkEnroll', action: 'Add contacts to an event queue', description: 'Add up to 500 contacts; those already waiting in the queue are skipped' },
			{ name: 'Get', value: 'get', action: 'Get an event queue', description: 'Get an event queue with its steps' },
			{ name: 'Get Many', value: 'getAll', action: 'Get many event queues', description: 'List event queues' },
			{ name: 'Get Tasks', value: 'getTasks', action: 'Get the tasks of an event queue', description: 'List the scheduled step executions of a queue' },
			{ name: 'Unenroll', value: 'unenroll', action: 'Remove a contact from an event queue', description: 'Cancel a contact\'s pending steps in the queue' },
		],
		default: 'bulkEnroll',
	},
];

export const eventQueueFieldsDescription: INodeProperties[] = [
	queueField(['get', 'bulkEnroll', 'unenroll', 'getTasks']),
	{
		displayName: 'Contact IDs',
		name: 'contactIds',
		type: 'string',
		required: true,
		displayOptions: { show: { resource: ['eventQueue'], operation: ['bulkEnroll'] } },
		default: '',
		description: 'Comma-separated contact IDs (at most 500)',
	},
	{
		displayName: 'Options',
		name: 'options',
		type: 'collection',
		placeholder: 'Add Option',
		displayOptions: { show: { resource: ['eventQueue'], operation: ['bulkEnroll'] } },
		default: {},
		options: [
			{ displayName: 'Anchor Time', name: 'enrollment_time', type: 'dateTime', default: '', description: 'Step delays count from this moment (default: now)' },
			{ displayName: 'Deal ID', name: 'deal_id', type: 'string', default: '', description: 'A CRM deal to link the enrollments to' },
			{ displayName: 'Source', name: 'enrollment_source', type: 'string', default: 'n8n' },
		],
	},
	contactIdField('eventQueue', ['unenroll']),
	...listFields('eventQueue', 'getAll'),
	...listFields('eventQueue', 'getTasks', 200),
	{
		displayName: 'Filters',
		name: 'filters',
		type: 'collection',
		placeholder: 'Add Filter',
		displayOptions: { show: { resource: ['eventQueue'], operation: ['getAll'] } },
		default: {},
		options: [
			{
				displayName: 'Status',
				name: 'status',
				type: 'options',
				options: [
					{ name: 'Active', value: 'active' },
					{ name: 'Archived', value: 'archived' },
					{ name: 'Draft', value: 'draft' },
					{ name: 'Paused', value: 'paused' },
				],
				default: 'active',
			},
		],
	},
	{
		displayName: 'Filters',
		name: 'filters',
		type: 'collection',
		placeholder: 'Add Filter',
		displayOptions: { show: { resource: ['eventQueue'], operation: ['getTasks'] } },
		default: {},
		options: [
			{
				displayName: 'Status',
				name: 'status',
				type: 'options',
				options: [
					{ name: 'Cancelled', value: 'cancelled' },
					{ name: 'Completed', value: 'completed' },
					{ name: 'Failed', value: 'failed' },
					{ name: 'Paused', value: 'paused' },
					{ name: 'Pending', value: 'pending' },
					{ name: 'Processing', value: 'processing' },
				],
				default: 'pending',
			},
		],
	},
];
