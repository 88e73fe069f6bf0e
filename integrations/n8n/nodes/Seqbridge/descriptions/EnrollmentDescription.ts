import type { INodeProperties } from 'n8n-workflow';

import { contactIdField, listFields, sequenceField } from './shared';

export const enrollmentOperations: INodeProperties[] = [
	{
		displayName: 'Operation',
		name: 'operation',
		type: 'options',
		noDataExpression: true,
		displayOptions: { show: { resource: ['enrollment'] } },
		options: [
			{ name: 'Bulk Enroll', value: 'bulkEnroll', action: 'Enroll many contacts in a sequence', description: 'Enroll up to 1000 contacts by ID or email; unknown and already enrolled ones are skipped' },
			{ name: 'Enroll', value: 'enroll', action: 'Enroll a contact in a sequence', description: 'Enroll one contact by email or ID' },
			{ name: 'Get', value: 'get', action: 'Get an enrollment', description: 'Get one enrollment' },
			{ name: 'Get Many', value: 'getAll', action: 'Get many enrollments', description: 'List the enrollments of a sequence' },
			{ name: 'Pause or Resume', value: 'update', action: 'Pause or resume an enrollment', description: 'Pause an enrollment (its remaining delay is kept) or resume it' },
			{ name: 'Unenroll', value: 'unenroll', action: 'Unenroll a contact', description: 'End a contact\'s enrollment in one sequence or everywhere, with a reason' },
		],
		default: 'enroll',
	},
];

export const enrollmentFieldsDescription: INodeProperties[] = [
	sequenceField('enrollment', ['enroll', 'bulkEnroll', 'getAll', 'get', 'update']),
	{
		displayName: 'Identify Contact By',
		name: 'identifyBy',
		type: 'options',
		displayOptions: { show: { resource: ['enrollment'], operation: ['enroll'] } },
		options: [
			{ name: 'Email', value: 'email' },
			{ name: 'Contact ID', value: 'contactId' },
		],
		default: 'email',
	},
	{
		displayName: 'Email',
		name: 'email',
		type: 'string',
		placeholder: 'name@email.com',
		required: true,
		displayOptions: { show: { resource: ['enrollment'], operation: ['enroll'], identifyBy: ['email'] } },
		default: '',
	},
	{
		...contactIdField('enrollment', ['enroll']),
		displayOptions: { show: { resource: ['enrollment'], operation: ['enroll'], identifyBy: ['contactId'] } },
	},
	{
		displayName: 'Options',
		name: 'options',
		type: 'collection',
		placeholder: 'Add Option',
		displayOptions: { show: { resource: ['enrollment'], operation: ['enroll'] } },
		default: {},
		options: [
			{
				displayName: 'Enrollment Data (JSON)',
				name: 'enrollmentData',
				type: 'json',
				default: '{}',
				description: 'Free-form data kept on the enrollment',
			},
			{
				displayName: 'If Already Enrolled',
				name: 'ifEnrolled',
				type: 'options',
				options: [
					{
						name: 'Return the Current Enrollment',
						value: 'return',
						description: 'A repeated or retried execution never enrolls twice',
					},
					{ name: 'Error', value: 'error' },
				],
				default: 'return',
				description: 'What to do when the contact is already active or paused in this sequence',
			},
			{ displayName: 'Source', name: 'enrollmentSource', type: 'string', default: 'n8n', description: 'Recorded on the enrollment' },
		],
	},
	{
		displayName: 'Contact IDs',
		name: 'contactIds',
		type: 'string',
		displayOptions: { show: { resource: ['enrollment'], operation: ['bulkEnroll'] } },
		default: '',
		description: 'Comma-separated contact IDs',
	},
	{
		displayName: 'Emails',
		name: 'emails',
		type: 'string',
		displayOptions: { show: { resource: ['enrollment'], operation: ['bulkEnroll'] } },
		default: '',
		description: 'Comma-separated emails of existing contacts',
	},
	{
		displayName: 'Source',
		name: 'enrollmentSource',
		type: 'string',
		displayOptions: { show: { resource: ['enrollment'], operation: ['bulkEnroll'] } },
		default: 'n8n_bulk',
		description: 'Recorded on each enrollment',
	},
	{
		displayName: 'Enrollment ID',
		name: 'enrollmentId',
		type: 'string',
		required: true,
		displayOptions: { show: { resource: ['enrollment'], operation: ['get', 'update'] } },
		default: '',
	},
	{
		displayName: 'Action',
		name: 'status',
		type: 'options',
		displayOptions: { show: { resource: ['enrollment'], operation: ['update'] } },
		options: [
			{ name: 'Pause', value: 'paused' },
			{ name: 'Resume', value: 'active' },
		],
		default: 'paused',
	},
	contactIdField('enrollment', ['unenroll']),
	{
		displayName: 'From',
		name: 'scope',
		type: 'options',
		displayOptions: { show: { resource: ['enrollment'], operation: ['unenroll'] } },
		options: [
			{ name: 'One Sequence', value: 'sequence' },
			{ name: 'Everything', value: 'all', description: 'Every sequence and event queue' },
		],
		default: 'sequence',
	},
	sequenceField('enrollment', ['unenroll'], {
		displayOptions: { show: { resource: ['enrollment'], operation: ['unenroll'], scope: ['sequence'] } },
	}),
	{
		displayName: 'Reason',
		name: 'reason',
		type: 'options',
		displayOptions: { show: { resource: ['enrollment'], operation: ['unenroll'] } },
		options: [
			{ name: 'Bounced', value: 'bounced' },
			{ name: 'Converted', value: 'converted' },
			{ name: 'Manual', value: 'manual' },
			{ name: 'Replied', value: 'replied' },
			{ name: 'Unsubscribed', value: 'unsubscribed' },
		],
		default: 'manual',
	},
	...listFields('enrollment', 'getAll'),
	{
		displayName: 'Filters',
		name: 'filters',
		type: 'collection',
		placeholder: 'Add Filter',
		displayOptions: { show: { resource: ['enrollment'], operation: ['getAll'] } },
		default: {},
		options: [
			{
				displayName: 'Status',
				name: 'status',
				type: 'options',
				options: [
					{ name: 'Active', value: 'active' },
					{ name: 'Completed', value: 'completed' },
					{ name: 'Exited', value: 'exited' },
					{ name: 'Failed', value: 'failed' },
					{ name: 'Paused', value: 'paused' },
				],
				default: 'active',
			},
		],
	},
];
