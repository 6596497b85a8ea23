// Training's public pieces: the loss (its kernels live in kernels/loss.ts), optimizers as fused
// GPU updates, learning-rate schedules and checkpoints. File I/O for checkpoints is Node-only:
// saveCheckpoint/loadCheckpoint come from the node entry (src/node/checkpoint-files.ts).
export {
  checkLossStats,
  crossEntropyReduceProgram,
  crossEntropyRowsProgram,
  decodeLossStats,
  LabelOutOfRangeError,
  LOSS_STATS_BYTES,
  NonFiniteLossError,
  prepareCrossEntropy,
  type CrossEntropyBuffers,
  type CrossEntropyOptions,
  type CrossEntropyStep,
  type LossStats,
} from '../kernels/loss.ts';
export {
  createOptimizer,
  OptimizerError,
  resolveConfig as resolveOptimizerConfig,
  type GradNormReport,
  type Optimizer,
  type OptimizerConfig,
  type OptimizerState,
  type OptimizerType,
  type ParamBinding,
  type ResolvedOptimizerConfig,
  type SlotName,
} from './optimizers.ts';
export type { UpdateRule } from '../kernels/optimizer-kernels.ts';
export {
  createSchedule,
  scheduleFromJson,
  ScheduleError,
  type Schedule,
  type ScheduleSpec,
  type WarmupSpec,
} from './schedules.ts';
export {
  architectureFingerprint,
  CHECKPOINT_V1_MAGIC,
  CHECKPOINT_VERSION,
  CheckpointError,
  checkFingerprint,
  deserializeCheckpoint,
  graphWeights,
  loadSafetensorsWeights,
  OPTIMIZER_TENSOR_PREFIX,
  restoreGraphWeights,
  serializeCheckpoint,
  type ArchitectureFingerprint,
  type Checkpoint,
  type CheckpointProblem,
  type CheckpointTensor,
  type DeserializeOptions,
  type JsonValue,
} from './checkpoint.ts';
export {
  MAX_HEADER_BYTES as SAFETENSORS_MAX_HEADER_BYTES,
  parseSafetensors,
  SAFETENSORS_DTYPES,
  serializeSafetensors,
  toFloat32,
  type SafetensorsDtype,
  type SafetensorsEntry,
  type SafetensorsFile,
  type SafetensorsTensorInput,
} from './safetensors.ts';
export {
  differentiate,
  logitsOf,
  partitionGraph,
  type GraphPartition,
  type TrainableParameter,
  type TrainingLowered,
} from './autodiff.ts';
export { TrainingPlan, type TrainingPlanOptions } from './training-plan.ts';
export {
  BatchSourceError,
  fit,
  rankClasses,
  softmaxRows,
  Trainer,
  TrainingDivergedError,
  type BatchRequest,
  type BatchSource,
  type Classification,
  type ClassifyOptions,
  type StepInfo,
  type EpochMetrics,
  type EvaluateResult,
  type FitOptions,
  type FitResult,
  type TrainBatch,
  type TrainerCallbacks,
  type TrainerOptions,
} from './trainer.ts';
export { DIFFERENTIABLE_OPS, gradientRule } from '../ops/registry.ts';
export type { GradientRule, RuleContext, RuleStep } from '../ops/op.ts';
