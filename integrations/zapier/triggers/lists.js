'use strict';
// Hidden triggers behind the Sequence and Event Queue dropdowns. Zapier asks page by page
// (bundle.meta.page) as the user scrolls; queues are read whole, following the API's cursor.

const { call } = require('../lib/http');

const PAGE = 100;

const sequenceList = {
  key: 'sequence_list',
  noun: 'Sequence',
  display: {
    label: 'List Sequences',
    description: 'Lists sequences, for the Sequence dropdown.',
    hidden: true,
  },
  operation: {
    canPaginate: true,
    perform: async (z, bundle) => {
      const page = (bundle.meta && bundle.meta.page) || 0;
      const answer = await call(z, bundle, 'GET', '/api/v1/sequences', {
        params: { limit: PAGE, offset: page * PAGE },
      });
      // Archived sequences cannot enroll anyone: keep them out of the dropdown.
      return answer.data
        .filter((sequence) => sequence.status !== 'archived')
        .map((sequence) => ({ ...sequence, name: sequence.status === 'active' ? sequence.name : `${sequence.name} (${sequence.status})` }));
    },
    sample: { id: 'c6672a66-50da-483b-87be-e977d9e280c0', name: 'Welcome', status: 'active' },
    outputFields: [
      { key: 'id', label: 'Sequence ID' },
      { key: 'name', label: 'Name' },
      { key: 'status', label: 'Status' },
    ],
  },
};

const queueList = {
  key: 'queue_list',
  noun: 'Event Queue',
  display: {
    label: 'List Event Queues',
    description: 'Lists event queues, for the Event Queue dropdown.',
    hidden: true,
  },
  operation: {
    // Cursor pages, walked here in one go: accounts have tens of queues, not thousands.
    perform: async (z, bundle) => {
      const queues = [];
      let cursor = null;
      do {
        const params = cursor ? { limit: PAGE, cursor } : { limit: PAGE };
        const answer = await call(z, bundle, 'GET', '/api/v1/event-queues', { params });
        queues.push(...answer.data);
        cursor = answer.meta.next_cursor;
      } while (cursor && queues.length < 2000);
      return queues.filter((queue) => queue.status !== 'archived');
    },
    sample: { id: '3c2b1a09-8f7e-4d6c-b5a4-938271605f4e', name: 'Onboarding', status: 'active' },
    outputFields: [
      { key: 'id', label: 'Event Queue ID' },
      { key: 'name', label: 'Name' },
      { key: 'status', label: 'Status' },
    ],
  },
};

module.exports = { sequenceList, queueList };
