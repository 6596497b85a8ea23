// Graph surgery: cut a network, find and remove its classifier head, graft a new one, choose
// what trains, and the four transfer-learning recipes built from those. Pure TypeScript.
//
// Structural rewrites (cutAt, removeTop, includeTop, graft, transfer, setBatchSize) return a
// new Graph and leave their input untouched; freeze, unfreeze, reinit and makeBatchFlexible
// change the graph they are given (flags and whole tensors, never tensor data in place) and
// return counts.
export {
  cutAt,
  cutPoints,
  defaultCutPoint,
  findBypass,
  formatCutPoints,
  refuseUncuttable,
  type Bypass,
  type CutPoint,
  type CutResult,
} from './cut.ts';
export { findHead, headOf, includeTop, removeTop, type Head } from './head.ts';
export { graft, type DenseSpec, type GraftResult, type HeadSpec } from './graft.ts';
export {
  describeSelector,
  freeze,
  reinit,
  reinitLayers,
  selectInitializers,
  unfreeze,
  type SelectionCounts,
  type Selector,
} from './freeze.ts';
export { replaceClassifier, transfer, type TransferOptions, type TransferSummary } from './transfer.ts';
export { makeBatchFlexible, setBatchSize } from './batch.ts';
export { closestNames, editDistance, keepUpTo, layersWithParameters, stateTensors } from './common.ts';
export { adaptToInputSize, flattenLogits, type ResizeSummary } from './resize.ts';
