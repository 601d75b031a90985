/** The OrbStack backend: `orbctl` driven through the injected runner. */
export { createOrbstackBackend } from './backend.js';
export type { OrbstackBackendOptions } from './backend.js';
export { orbCreatePlan, orbMatchesSpec, parseOrbImage, type OrbCreatePlan } from './spec.js';
export { planOrb, USER_DATA_FILE } from './plan.js';
export { classifyOrbctlFailure, orbctlRunFailure } from './classify.js';
