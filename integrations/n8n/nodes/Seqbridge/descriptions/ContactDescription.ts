import type { INodeProperties } from 'n8n-workflow';

import { contactIdField, listFields } from './shared';

const STATUS_OPTIONS = [
	{ name: 'Active', value: 'active' },
	{ name: 'Bounced', value: 'bounced' },
	{ name: 'Do Not Contact', value: 'do_not_contact' },
	{ name: 'Unsubscribed', value: 'unsubscribed' },
];

/** The contact fields that can be set, for Create's "Additional Fields" and Update's "Update Fields". */
const contactFields: INodeProperties[] = [
	{ displayName: 'City', name: 'city', type: 'string', default: '' },
	{ displayName: 'Company ID', name: 'company_id', type: 'string', default: '' },
	{ displayName: 'Contact Type', name: 'contact_type', type: 'string', default: '', placeholder: 'lead' },
	{ displayName: 'Converted', name: 'converted', type: 'boolean', default: false, description: 'Whether the contact became a customer (converted contacts are not enrolled)' },
	{ displayName: 'Country', name: 'country', type: 'string', default: '' },
	{
		displayName: 'Custom Attributes (JSON)',
		name: 'attributes',
		type: 'json',
		default: '{}',
		description: 'Free-form fields, e.g. {"hubspot_id": "501"}; replaces the attributes the contact has',
	},
	{ displayName: 'First Name', name: 'first_name', type: 'string', default: '' },
	{ displayName: 'Has Open Ticket', name: 'has_open_ticket', type: 'boolean', default: false, description: 'Whether the contact has an open support ticket (which pauses new enrollments)' },
	{ displayName: 'Job Title', name: 'job_title', type: 'string', default: '' },
	{ displayName: 'Last Name', name: 'last_name', type: 'string', default: '' },
	{ displayName: 'Source', name: 'source', type: 'string', default: '', placeholder: 'webinar' },
	{ displayName: 'State', name: 'state', type: 'string', default: '' },
	{ displayName: 'Status', name: 'status', type: 'options', options: STATUS_OPTIONS, default: 'active' },
	{ displayName: 'Tags', name: 'tags', type: 'string', default: '', description: 'Comma-separated; replaces the tags the contact has' },
	{ displayName: 'Time Zone', name: 'timezone', type: 'string', default: '', placeholder: 'Europe/Berlin' },
];

const identityFields: INodeProperties[] = [
	{ displayName: 'Email', name: 'email', type: 'string', placeholder: 'name@email.com', default: '' },
	{ displayName: 'Phone', name: 'phone', type: 'string', default: '' },
];

export const contactOperations: INodeProperties[] = [
	{
		displayName: 'Operation',
		name: 'operation',
		type: 'options',
		noDataExpression: true,
		displayOptions: { show: { resource: ['contact'] } },
		options: [
			{ name: 'Create', value: 'create', action: 'Create a contact', description: 'Create a contact' },
			{ name: 'Delete', value: 'delete', action: 'Delete a contact', description: 'Delete a contact and its enrollments' },
			{ name: 'Get', value: 'get', action: 'Get a contact', description: 'Get a contact' },
			{ name: 'Get Many', value: 'getAll', action: 'Get many contacts', description: 'List contacts, filtered' },
			{ name: 'Update', value: 'update', action: 'Update a contact', description: 'Change the given fields of a contact' },
		],
		default: 'create',
	},
];

export const contactFieldsDescription: INodeProperties[] = [
	{
		displayName: 'Email',
		name: 'email',
		type: 'string',
		placeholder: 'name@email.com',
		displayOptions: { show: { resource: ['contact'], operation: ['create'] } },
		default: '',
		description: 'Unique per organization (case-insensitive). A contact needs an email or a phone.',
	},
	{
		displayName: 'Phone',
		name: 'phone',
		type: 'string',
		displayOptions: { show: { resource: ['contact'], operation: ['create'] } },
		default: '',
		description: 'International form, e.g. +14155550123; stored in E.164',
	},
	{
		displayName: 'Additional Fields',
		name: 'fields',
		type: 'collection',
		placeholder: 'Add Field',
		displayOptions: { show: { resource: ['contact'], operation: ['create'] } },
		default: {},
		options: contactFields,
	},
	contactIdField('contact', ['get', 'update', 'delete']),
	{
		displayName: 'Update Fields',
		name: 'updateFields',
		type: 'collection',
		placeholder: 'Add Field',
		displayOptions: { show: { resource: ['contact'], operation: ['update'] } },
		default: {},
		options: [...contactFields, ...identityFields].sort((a, b) => a.displayName.localeCompare(b.displayName)),
	},
	...listFields('contact', 'getAll'),
	{
		displayName: 'Filters',
		name: 'filters',
		type: 'collection',
		placeholder: 'Add Filter',
		displayOptions: { show: { resource: ['contact'], operation: ['getAll'] } },
		default: {},
		options: [
			{ displayName: 'Email', name: 'email', type: 'string', placeholder: 'name@email.com', default: '', description: 'Exact, case-insensitive' },
			{ displayName: 'Phone', name: 'phone', type: 'string', default: '', description: 'Matched after normalising to E.164' },
			{ displayName: 'Source', name: 'source', type: 'string', default: '' },
			{ displayName: 'Status', name: 'status', type: 'options', options: STATUS_OPTIONS, default: 'active' },
			{ displayName: 'Tag', name: 'tag', type: 'string', default: '', description: 'Contacts that have this tag' },
		],
	},
];
