/** The OrbStack backend: `orbctl` driven through the injected runner. */
export { createOrbstackBackend, orbCreatePlan, orbMatchesSpec, parseOrbImage } from './backend.js';
export type { OrbCreatePlan, OrbstackBackendOptions } from './backend.js';
export { classifyOrbctlFailure, orbctlRunFailure } from './classify.js';
