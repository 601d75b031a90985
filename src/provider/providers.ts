/**
 * The provider objects Pulumi serializes into each resource's `__provider`. The closure
 * serializer captures local functions by value and module-level values as snapshots, so
 * these objects hold nothing but tiny methods that load the real implementation inside
 * the provider host at call time. They capture no handle, no config and no secret.
 *
 * Only type imports here: a value import would be captured into every resource's state.
 */
import type * as pulumi from '@pulumi/pulumi';
import type * as Impl from './impl.js';

type ImplModule = typeof Impl;

/**
 * Loads impl.js inside the provider host. The host evaluates `__provider` as a CommonJS
 * module whose imports resolve from its working directory, the Pulumi project, where
 * `localvm` is installed; the package's `./pulumi` entry hands out its own impl.js.
 */
async function loadImpl(): Promise<ImplModule> {
  // A non-literal specifier: TypeScript must not resolve the package's own name at build time.
  const entry = 'localvm/pulumi';
  const mod = (await import(entry)) as { loadProviderImpl(): Promise<ImplModule> };
  return mod.loadProviderImpl();
}

export const vmProvider: pulumi.dynamic.ResourceProvider = {
  check: async (olds, news) => (await loadImpl()).vmCheck(olds, news),
  diff: async (id, olds, news) => (await loadImpl()).vmDiff(id, olds, news),
  create: async (inputs) => (await loadImpl()).vmCreate(inputs),
  read: async (id, props) => (await loadImpl()).vmRead(id, props ?? {}),
  update: async (id, olds, news) => (await loadImpl()).vmUpdate(id, olds, news),
  delete: async (id, props) => (await loadImpl()).vmDelete(id, props),
};

export const templateProvider: pulumi.dynamic.ResourceProvider = {
  check: async (olds, news) => (await loadImpl()).templateCheck(olds, news),
  diff: async (id, olds, news) => (await loadImpl()).templateDiff(id, olds, news),
  create: async (inputs) => (await loadImpl()).templateCreate(inputs),
  read: async (id, props) => (await loadImpl()).templateRead(id, props ?? {}),
  update: async (id, olds, news) => (await loadImpl()).templateUpdate(id, olds, news),
  delete: async (id, props) => (await loadImpl()).templateDelete(id, props),
};

export const vmCommandProvider: pulumi.dynamic.ResourceProvider = {
  check: async (olds, news) => (await loadImpl()).vmCommandCheck(olds, news),
  diff: async (id, olds, news) => (await loadImpl()).vmCommandDiff(id, olds, news),
  create: async (inputs) => (await loadImpl()).vmCommandCreate(inputs),
  read: async (id, props) => (await loadImpl()).vmCommandRead(id, props ?? {}),
  update: async (id, olds, news) => (await loadImpl()).vmCommandUpdate(id, olds, news),
  delete: async (id, props) => (await loadImpl()).vmCommandDelete(id, props),
};

export const vmFileProvider: pulumi.dynamic.ResourceProvider = {
  check: async (olds, news) => (await loadImpl()).vmFileCheck(olds, news),
  diff: async (id, olds, news) => (await loadImpl()).vmFileDiff(id, olds, news),
  create: async (inputs) => (await loadImpl()).vmFileCreate(inputs),
  read: async (id, props) => (await loadImpl()).vmFileRead(id, props ?? {}),
  update: async (id, olds, news) => (await loadImpl()).vmFileUpdate(id, olds, news),
  delete: async (id, props) => (await loadImpl()).vmFileDelete(id, props),
};

export const diskProvider: pulumi.dynamic.ResourceProvider = {
  check: async (olds, news) => (await loadImpl()).diskCheck(olds, news),
  diff: async (id, olds, news) => (await loadImpl()).diskDiff(id, olds, news),
  create: async (inputs) => (await loadImpl()).diskCreate(inputs),
  read: async (id, props) => (await loadImpl()).diskRead(id, props ?? {}),
  update: async (id, olds, news) => (await loadImpl()).diskUpdate(id, olds, news),
  delete: async (id, props) => (await loadImpl()).diskDelete(id, props),
};

export const diskAttachmentProvider: pulumi.dynamic.ResourceProvider = {
  check: async (olds, news) => (await loadImpl()).diskAttachmentCheck(olds, news),
  diff: async (id, olds, news) => (await loadImpl()).diskAttachmentDiff(id, olds, news),
  create: async (inputs) => (await loadImpl()).diskAttachmentCreate(inputs),
  read: async (id, props) => (await loadImpl()).diskAttachmentRead(id, props ?? {}),
  update: async (id, olds, news) => (await loadImpl()).diskAttachmentUpdate(id, olds, news),
  delete: async (id, props) => (await loadImpl()).diskAttachmentDelete(id, props),
};
