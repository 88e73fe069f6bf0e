import type { IDataObject, ILoadOptionsFunctions, INodePropertyOptions } from 'n8n-workflow';

import { seqbridgeApiRequest } from './GenericFunctions';
import { eventQueuesPage, sequencesPage } from './requests';

/** Sequences for the dropdowns; archived ones cannot enroll and are left out. */
export async function getSequences(this: ILoadOptionsFunctions): Promise<INodePropertyOptions[]> {
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
}

/** Event queues for the dropdowns, following the API's cursor. */
export async function getEventQueues(this: ILoadOptionsFunctions): Promise<INodePropertyOptions[]> {
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
}
