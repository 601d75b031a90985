/** The libvirt backend's pure pieces (XML and argv builders, URIs, targets); the backend itself loads through the registry. */
export { domainXml, type DomainInputs, type DomainType } from './domainXml.js';
export { LOCALVM_NS, metadataNode, parseMetadata, type LocalVmMetadata } from './metadata.js';
export { LIBVIRT_BACKEND } from './register.js';
export { resolveTarget, targets, type LibvirtTarget } from './target.js';
export { parseLibvirtUri, type LibvirtUri } from './uri.js';
export { createVirsh, type VirshBuilders } from './virsh.js';
