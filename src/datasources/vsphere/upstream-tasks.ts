import type { TaskState, UpstreamTaskRecord } from '../../model/upstream-task.js';
import type { ObjectContent, PropertySpec } from './vim.js';
import { type MoRef, type XNode, child, elementXml, intOf, moRefOf, moRefXml, path, textOf, xsiType } from './xml.js';

// vCenter's recent tasks (TaskManager.recentTask: every task of the last
// minutes, whoever started it), followed by the live inventory's filter so
// that task updates reach subscribers whichever tool started the task.

export const TASK_SPEC: PropertySpec = { type: 'Task', paths: ['info'] };

/** The filter's object set that reaches every recent task from the TaskManager. */
export function recentTasksObjectSet(taskManager: MoRef): string {
  return (
    `<objectSet>${moRefXml('obj', taskManager)}${elementXml('skip', true)}` +
    `<selectSet xsi:type="TraversalSpec">${elementXml('name', 'recentTasks')}${elementXml('type', 'TaskManager')}` +
    `${elementXml('path', 'recentTask')}${elementXml('skip', false)}</selectSet></objectSet>`
  );
}

/** A task's fault: its type and vCenter's message. */
export function taskFault(info: XNode | undefined): { code: string; message: string } {
  const error = child(info, 'error');
  const code = xsiType(child(error, 'fault')) ?? 'MethodFault';
  const message =
    textOf(child(error, 'localizedMessage')) || textOf(path(error, 'fault', 'faultMessage', 'message')) || code;
  return { code, message };
}

function stateOf(info: XNode | undefined): TaskState {
  switch (textOf(child(info, 'state'))) {
    case 'queued':
      return 'QUEUED';
    case 'success':
      return 'SUCCEEDED';
    case 'error':
      return taskFault(info).code === 'RequestCanceled' ? 'CANCELLED' : 'FAILED';
    default:
      return 'RUNNING';
  }
}

function dateOf(node: XNode | undefined): Date | null {
  const text = textOf(node);
  const date = text ? new Date(text) : null;
  return date && !Number.isNaN(date.getTime()) ? date : null;
}

/** A recent task as the schema serves it, from its `info`. */
export function upstreamTaskRecord(platformId: string, o: ObjectContent): UpstreamTaskRecord {
  const info = o.props.get('info');
  const state = stateOf(info);
  const entity = moRefOf(child(info, 'entity'));
  return {
    platformId,
    nativeId: o.obj.value,
    description: textOf(child(info, 'descriptionId')) ?? 'unknown',
    state,
    progress: state === 'SUCCEEDED' ? 100 : Math.min(100, Math.max(0, intOf(child(info, 'progress')) ?? 0)),
    targetVmNativeId: entity?.type === 'VirtualMachine' ? entity.value : null,
    targetName: textOf(child(info, 'entityName')),
    initiatedBy: textOf(path(info, 'reason', 'userName')),
    queuedAt: dateOf(child(info, 'queueTime')),
    startedAt: dateOf(child(info, 'startTime')),
    finishedAt: dateOf(child(info, 'completeTime')),
    error: state === 'FAILED' || state === 'CANCELLED' ? taskFault(info) : null,
  };
}
