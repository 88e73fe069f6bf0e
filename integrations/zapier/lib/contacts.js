'use strict';
// Contacts: the fields a Zap can set, and finding one by email, phone or id.

const { call } = require('./http');

const CONTACT_INPUTS = [
  { key: 'email', label: 'Email', type: 'string', helpText: 'Unique per organization (case-insensitive).' },
  { key: 'phone', label: 'Phone', type: 'string', helpText: 'International form, e.g. `+14155550123`; stored in E.164.' },
  { key: 'first_name', label: 'First Name', type: 'string' },
  { key: 'last_name', label: 'Last Name', type: 'string' },
  { key: 'job_title', label: 'Job Title', type: 'string' },
  { key: 'contact_type', label: 'Contact Type', type: 'string', helpText: 'E.g. `lead` or `customer`.' },
  { key: 'source', label: 'Source', type: 'string', helpText: 'Where the contact came from, e.g. `webinar`.' },
  { key: 'city', label: 'City', type: 'string' },
  { key: 'state', label: 'State', type: 'string' },
  { key: 'country', label: 'Country', type: 'string' },
  { key: 'timezone', label: 'Time Zone', type: 'string', helpText: 'IANA name, e.g. `Europe/Berlin` (send windows can use it).' },
  {
    key: 'tags',
    label: 'Tags',
    type: 'string',
    list: true,
    helpText: 'Added to the tags the contact has; a `tag_added` sequence enrolls the contact when it gets its tag.',
  },
  {
    key: 'attributes',
    label: 'Custom Attributes',
    dict: true,
    helpText: 'Free-form fields, e.g. `hubspot_id` → `501`. Given keys are set; others are kept.',
  },
];

const SIMPLE = CONTACT_INPUTS.filter((f) => !f.list && !f.dict).map((f) => f.key);

/** The contact fields the Zap filled in (empty ones are left out, never cleared). */
const contactFields = (inputData) => {
  const fields = {};
  for (const key of SIMPLE) {
    const value = inputData[key];
    if (value !== undefined && value !== null && String(value).trim() !== '') {
      fields[key] = String(value).trim();
    }
  }
  const tags = [].concat(inputData.tags || []).map((t) => String(t).trim()).filter(Boolean);
  if (tags.length) {
    fields.tags = [...new Set(tags)];
  }
  if (inputData.attributes && typeof inputData.attributes === 'object' && Object.keys(inputData.attributes).length) {
    fields.attributes = inputData.attributes;
  }
  return fields;
};

/** The oldest contact with this email or phone, or null. */
const findContact = async (z, bundle, { email, phone }) => {
  for (const [name, value] of [['email', email], ['phone', phone]]) {
    if (value && String(value).trim()) {
      const page = await call(z, bundle, 'GET', '/api/v1/contacts', { params: { [name]: String(value).trim(), limit: 1 } });
      if (page.data.length) {
        return page.data[0];
      }
    }
  }
  return null;
};

/** The contact id from a "contact email or id" pair of fields; throws when neither finds one. */
const resolveContactId = async (z, bundle, { contact_id: contactId, email }) => {
  if (contactId && String(contactId).trim()) {
    return String(contactId).trim();
  }
  if (!email || !String(email).trim()) {
    throw new z.errors.Error('Give the contact\'s email or its Seqbridge contact ID.', 'missing_field', 400);
  }
  const contact = await findContact(z, bundle, { email });
  if (!contact) {
    throw new z.errors.Error(`No contact with email ${email}.`, 'not_found', 404);
  }
  return contact.id;
};

const CONTACT_OUTPUTS = [
  { key: 'id', label: 'Contact ID' },
  { key: 'email', label: 'Email' },
  { key: 'phone', label: 'Phone' },
  { key: 'first_name', label: 'First Name' },
  { key: 'last_name', label: 'Last Name' },
  { key: 'status', label: 'Status' },
  { key: 'tags', label: 'Tags' },
  { key: 'created_at', label: 'Created At', type: 'datetime' },
  { key: 'updated_at', label: 'Updated At', type: 'datetime' },
];

const CONTACT_SAMPLE = {
  id: 'dbe133be-03f5-4341-8e7e-796ef4458e9a',
  email: 'ada@example.com',
  phone: '+16505551234',
  first_name: 'Ada',
  last_name: 'Lovelace',
  tags: ['vip'],
  status: 'active',
  converted: false,
  has_open_ticket: false,
  attributes: { plan: 'pro' },
  created_at: '2026-01-05T09:30:00Z',
  updated_at: '2026-01-05T09:30:00Z',
};

module.exports = { CONTACT_INPUTS, CONTACT_OUTPUTS, CONTACT_SAMPLE, contactFields, findContact, resolveContactId };
