import type { Logger } from 'pino';

import type { Config } from '../config/schema.js';
import type { EventPublisher, TaskEvent } from '../model/events.js';
import { SharedTaskRecords } from '../mutations/shared-task-records.js';
import { type StoredTask, type TaskManager, type TaskRecord, storedTask } from '../mutations/task-manager.js';
import { MemoryEventLog } from '../subscriptions/event-log.js';
import { StreamEventLog } from '../subscriptions/stream-event-log.js';
import type { EventSource } from '../subscriptions/subscriber-queue.js';
import type { SharedState } from './shared-state.js';

const taskEvent = (task: TaskRecord): TaskEvent => ({ type: 'TASK', platformId: task.platformId, taskId: task.id });

/**
 * How events travel: alone, through one log in memory; with other
 * instances, through every platform's stream in Redis (the inventory
 * publishes through the replication, the gateway's tasks are told to every
 * instance with their records, and subscribers read what the streams
 * bring). `publisher` is where the live inventory publishes; `source` is
 * what subscriptions read.
 */
export async function wireEvents(
  shared: SharedState,
  config: Config,
  tasks: TaskManager,
  logger: Logger,
): Promise<{ source: EventSource; publisher: EventPublisher }> {
  const { replication, redis } = shared;
  if (!replication || !redis) {
    const log = new MemoryEventLog(config.subscriptions.history);
    tasks.onUpdate((task) => log.publish(taskEvent(task)));
    return { source: log, publisher: log };
  }
  const log = new StreamEventLog(replication, logger, config.subscriptions.history);
  const taskRecords = new SharedTaskRecords(redis, shared.keyPrefix, config.tasks.retain, logger);
  for (const t of await taskRecords.recent().catch(() => [])) tasks.adopt(t);
  tasks.lookUpSharedTasksWith((id) => taskRecords.get(id));
  replication.onEntry((platformId, read) => {
    if (read.entry.task && read.entry.by !== replication.instanceId) tasks.adopt(read.entry.task as StoredTask);
    log.deliver(platformId, read);
  });
  tasks.onUpdate((task) => {
    const record = storedTask(task);
    taskRecords.save(record);
    replication.publishTask(taskEvent(task), record);
  });
  return { source: log, publisher: replication };
}
