import type { SoapClient } from './soap-client.js';
import { VsphereTransportError } from './errors.js';
import { type MoRef, type XNode, child, children, elementXml, moRefOf, moRefXml, path, textOf } from './xml.js';

// The vim25 methods the gateway uses, typed by hand from VMware's API
// reference; names are vSphere's own.

export interface ServiceContent {
  rootFolder: MoRef;
  propertyCollector: MoRef;
  viewManager: MoRef;
  sessionManager: MoRef;
  /** Absent on endpoints without one. */
  taskManager: MoRef | null;
  /** The PerformanceManager (QueryPerf); absent on endpoints without one. */
  perfManager: MoRef | null;
  about: {
    fullName: string;
    apiType: string;
    apiVersion: string;
    version: string;
    build: string;
    instanceUuid: string | null;
  };
}

const SERVICE_INSTANCE: MoRef = { type: 'ServiceInstance', value: 'ServiceInstance' };

function requireRef(node: XNode | undefined, what: string): MoRef {
  const ref = moRefOf(node);
  if (!ref) throw new VsphereTransportError('PROTOCOL', `the response has no ${what}`);
  return ref;
}

export async function retrieveServiceContent(client: SoapClient): Promise<ServiceContent> {
  const res = await client.invoke('RetrieveServiceContent', moRefXml('_this', SERVICE_INSTANCE));
  const rv = child(res, 'returnval');
  const about = child(rv, 'about');
  return {
    rootFolder: requireRef(child(rv, 'rootFolder'), 'rootFolder'),
    propertyCollector: requireRef(child(rv, 'propertyCollector'), 'propertyCollector'),
    viewManager: requireRef(child(rv, 'viewManager'), 'viewManager'),
    sessionManager: requireRef(child(rv, 'sessionManager'), 'sessionManager'),
    taskManager: moRefOf(child(rv, 'taskManager')),
    perfManager: moRefOf(child(rv, 'perfManager')),
    about: {
      fullName: textOf(child(about, 'fullName')) ?? '',
      apiType: textOf(child(about, 'apiType')) ?? '',
      apiVersion: textOf(child(about, 'apiVersion')) ?? '6.5',
      version: textOf(child(about, 'version')) ?? '',
      build: textOf(child(about, 'build')) ?? '',
      instanceUuid: textOf(child(about, 'instanceUuid')),
    },
  };
}

export async function login(
  client: SoapClient,
  sc: ServiceContent,
  userName: string,
  password: string,
): Promise<{ key: string }> {
  const res = await client.invoke(
    'Login',
    moRefXml('_this', sc.sessionManager) + elementXml('userName', userName) + elementXml('password', password),
  );
  return { key: textOf(path(res, 'returnval', 'key')) ?? '' };
}

export async function logout(client: SoapClient, sc: ServiceContent): Promise<void> {
  await client.invoke('Logout', moRefXml('_this', sc.sessionManager));
}

/** The server's clock: the cheapest call that proves the session is alive. */
export async function currentTime(client: SoapClient): Promise<Date> {
  const res = await client.invoke('CurrentTime', moRefXml('_this', SERVICE_INSTANCE));
  return new Date(textOf(child(res, 'returnval')) ?? Number.NaN);
}

/** A one-time ticket with which another connection takes up this session's login (CloneSession). */
export async function acquireCloneTicket(client: SoapClient, sc: ServiceContent): Promise<string> {
  const res = await client.invoke('AcquireCloneTicket', moRefXml('_this', sc.sessionManager));
  const ticket = textOf(child(res, 'returnval'));
  if (!ticket) throw new VsphereTransportError('PROTOCOL', 'the response has no clone ticket');
  return ticket;
}

/** Logs this connection in as the session that acquired `ticket`, without its password. */
export async function cloneSession(client: SoapClient, sc: ServiceContent, ticket: string): Promise<{ key: string }> {
  const res = await client.invoke(
    'CloneSession',
    moRefXml('_this', sc.sessionManager) + elementXml('cloneTicket', ticket),
  );
  return { key: textOf(path(res, 'returnval', 'key')) ?? '' };
}

export async function terminateSession(client: SoapClient, sc: ServiceContent, sessionKeys: string[]): Promise<void> {
  await client.invoke(
    'TerminateSession',
    moRefXml('_this', sc.sessionManager) + sessionKeys.map((k) => elementXml('sessionId', k)).join(''),
  );
}

export async function createContainerView(
  client: SoapClient,
  sc: ServiceContent,
  container: MoRef,
  types: readonly string[],
  recursive: boolean,
): Promise<MoRef> {
  const res = await client.invoke(
    'CreateContainerView',
    moRefXml('_this', sc.viewManager) +
      moRefXml('container', container) +
      types.map((t) => elementXml('type', t)).join('') +
      elementXml('recursive', recursive),
  );
  return requireRef(child(res, 'returnval'), 'view');
}

export async function destroyView(client: SoapClient, view: MoRef): Promise<void> {
  await client.invoke('DestroyView', moRefXml('_this', view));
}

/** One object's requested properties: name -> `<val>` element; paths it could not read in `missing`. */
export interface ObjectContent {
  obj: MoRef;
  props: Map<string, XNode>;
  missing: { path: string; fault: string }[];
}

export interface RetrieveResult {
  token: string | null;
  objects: ObjectContent[];
}

export interface PropertySpec {
  type: string;
  paths: readonly string[];
}

function propSetXml(specs: readonly PropertySpec[]): string {
  return specs
    .map(
      (s) =>
        `<propSet>${elementXml('type', s.type)}${elementXml('all', false)}${s.paths.map((p) => elementXml('pathSet', p)).join('')}</propSet>`,
    )
    .join('');
}

/**
 * A filter spec that walks a ContainerView to every object it holds; as
 * `<specSet>` (RetrievePropertiesEx) or under another element name (`<spec>`
 * of CreateFilter).
 */
export function containerFilterSpec(
  view: MoRef,
  specs: readonly PropertySpec[],
  element = 'specSet',
  /** More `<objectSet>` elements for the same spec. */
  moreObjectSets = '',
): string {
  return (
    `<${element}>${propSetXml(specs)}<objectSet>${moRefXml('obj', view)}${elementXml('skip', true)}` +
    `<selectSet xsi:type="TraversalSpec">${elementXml('name', 'view')}${elementXml('type', 'ContainerView')}` +
    `${elementXml('path', 'view')}${elementXml('skip', false)}</selectSet></objectSet>${moreObjectSets}</${element}>`
  );
}

/** A filter spec for chosen objects, many at once. */
export function objectsFilterSpec(objects: readonly MoRef[], specs: readonly PropertySpec[]): string {
  return `<specSet>${propSetXml(specs)}${objects.map((o) => `<objectSet>${moRefXml('obj', o)}${elementXml('skip', false)}</objectSet>`).join('')}</specSet>`;
}

function parseRetrieveResult(res: XNode): RetrieveResult {
  const rv = child(res, 'returnval');
  return {
    token: textOf(child(rv, 'token')),
    objects: children(rv, 'objects').map((o) => ({
      obj: requireRef(child(o, 'obj'), 'obj'),
      props: new Map(
        children(o, 'propSet').flatMap((p) => {
          const name = textOf(child(p, 'name'));
          const val = child(p, 'val');
          return name && val ? [[name, val] as const] : [];
        }),
      ),
      missing: children(o, 'missingSet').map((m) => ({
        path: textOf(child(m, 'path')) ?? '',
        fault: child(child(m, 'fault'), 'fault')?.attrs['xsi:type'] ?? 'unknown',
      })),
    })),
  };
}

export async function retrievePropertiesEx(
  client: SoapClient,
  sc: ServiceContent,
  filterSpec: string,
  maxObjects: number,
): Promise<RetrieveResult> {
  const res = await client.invoke(
    'RetrievePropertiesEx',
    moRefXml('_this', sc.propertyCollector) + filterSpec + `<options>${elementXml('maxObjects', maxObjects)}</options>`,
  );
  return parseRetrieveResult(res);
}

export async function continueRetrievePropertiesEx(
  client: SoapClient,
  sc: ServiceContent,
  token: string,
): Promise<RetrieveResult> {
  const res = await client.invoke(
    'ContinueRetrievePropertiesEx',
    moRefXml('_this', sc.propertyCollector) + elementXml('token', token),
  );
  return parseRetrieveResult(res);
}

/** Calls a `*_Task` method; resolves with the Task it started. */
export async function invokeTask(client: SoapClient, method: string, target: MoRef, argsXml = ''): Promise<MoRef> {
  const res = await client.invoke(method, moRefXml('_this', target) + argsXml);
  return requireRef(child(res, 'returnval'), 'task');
}

/** Calls a method that answers nothing (ShutdownGuest, RebootGuest). */
export async function invokeVoid(client: SoapClient, method: string, target: MoRef, argsXml = ''): Promise<void> {
  await client.invoke(method, moRefXml('_this', target) + argsXml);
}
