//! The one model builder: protobuf in, an optimized plan with one spawned state out. The
//! runtime's `Model` and `bit-tool`'s probes (calibration, evaluation, fine-tuning features,
//! profiling) are both built here, so they run the same graph on the same executor.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tract_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::TractErrorContext;
use tract_onnx::tract_core::runtime::RunOptions;

use crate::rewrite::{self, Rewrites};

/// How to build a [`Session`].
#[derive(Clone, Debug)]
pub struct Options {
    /// Side of the square input: the input is fixed to `[1, 3, size, size]` f32.
    pub input_size: u32,
    /// Inference threads (1: the calling thread only).
    pub threads: usize,
    /// Intermediate values exposed as extra outputs, after the model's own.
    pub extra_outputs: Vec<String>,
    /// Apply [`rewrite::for_tract`] (off only to compare with tract's standard ops).
    pub rewrite: bool,
}

impl Options {
    /// Defaults for a `size` x `size` input: one thread, no extra outputs, rewrites on.
    pub fn new(input_size: u32) -> Options {
        Options { input_size, threads: 1, extra_outputs: Vec::new(), rewrite: true }
    }
}

/// The executor for `threads` threads. `Executor::multithread(1)` would still use every
/// core (tract issue 2894), so one thread is `SingleThread`.
pub fn executor(threads: usize) -> tract_linalg::multithread::Executor {
    if threads <= 1 {
        tract_linalg::multithread::Executor::SingleThread
    } else {
        tract_linalg::multithread::Executor::multithread(threads)
    }
}

/// An optimized model for a fixed input size with one spawned state, reused by every run.
pub struct Session {
    plan: Arc<TypedRunnableModel>,
    state: TypedSimpleState,
    input_size: u32,
    own_outputs: usize,
    rewrites: Rewrites,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("input_size", &self.input_size)
            .field("rewrites", &self.rewrites)
            .finish()
    }
}

/// Per-op timings of one run.
#[derive(Debug, Default)]
pub struct Profile {
    /// (node name, op name, time) in execution order.
    pub by_node: Vec<(String, String, Duration)>,
    /// op name -> (node count, total time).
    pub by_op: BTreeMap<String, (usize, Duration)>,
}

impl Session {
    /// Builds `model`: the memory budget checked on the protobuf ([`crate::budget`]),
    /// optional extra outputs, the rewrites, tract's parser with the custom ops, the input
    /// fixed to `[1, 3, size, size]`, the budget checked on the typed graph, optimization and
    /// load-time folding, the executor, one spawned state. The protobuf is dropped before optimizing, so peak memory
    /// at start-up stays near one copy of the weights.
    ///
    /// A panic inside tract (a malformed graph it did not expect) becomes an error here: a
    /// model file is untrusted input and must not take the process down.
    pub fn build(model: pb::ModelProto, options: &Options) -> TractResult<Session> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Session::build_unguarded(model, options)))
            .unwrap_or_else(|panic| {
                Err(TractError::msg(format!(
                    "tract panicked while building the model: {}",
                    panic_message(&panic)
                )))
            })
    }

    fn build_unguarded(mut model: pb::ModelProto, options: &Options) -> TractResult<Session> {
        crate::budget::check_proto(&model)?;
        let graph = model.graph.as_mut().context("the model has no graph")?;
        let own_outputs = graph.output.len();
        graph.output.extend(options.extra_outputs.iter().map(|name| crate::proto::f32_value_info(name)));
        let rewrites = if options.rewrite { rewrite::for_tract(&mut model) } else { Rewrites::default() };
        if rewrites != Rewrites::default() {
            log::debug!("rewritten for tract: {rewrites:?}");
        }
        let inference = crate::ops::onnx().model_for_proto_model(&model);
        drop(model);
        let s = options.input_size as usize;
        let typed = inference?.with_input_fact(0, f32::fact([1, 3, s, s]).into())?.into_typed()?;
        crate::budget::check_typed(&typed)?;
        let optimized = crate::optimize::optimize(typed)?;
        let run_options = RunOptions { executor: Some(executor(options.threads)), ..Default::default() };
        let plan = optimized.into_runnable_with_options(&run_options)?;
        let state = plan.spawn()?;
        Ok(Session { plan, state, input_size: options.input_size, own_outputs, rewrites })
    }

    /// Side of the square input.
    pub fn input_size(&self) -> u32 {
        self.input_size
    }

    /// How many outputs the model itself has (the extra outputs follow them).
    pub fn own_outputs(&self) -> usize {
        self.own_outputs
    }

    /// What the rewrites changed.
    pub fn rewrites(&self) -> Rewrites {
        self.rewrites
    }

    /// The optimized plan, for inspection.
    pub fn plan(&self) -> &Arc<TypedRunnableModel> {
        &self.plan
    }

    /// The facts of the optimized model's first output.
    pub fn output_fact(&self) -> TractResult<TypedFact> {
        Ok(self.plan.model().output_fact(0)?.clone())
    }

    /// The matrix-multiplication kernels tract chose, deduplicated (their names say the ISA
    /// and the tile, e.g. `avx512amx_mmm_i32_16x16`).
    pub fn matmul_kernels(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .plan
            .model()
            .nodes()
            .iter()
            .filter(|n| n.op().name() == "OptMatMul")
            .flat_map(|n| n.op().info().unwrap_or_default())
            .filter_map(|info| Some(info.split_once("with [")?.1.trim_end_matches(']').to_string()))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Runs on one input value. The caller may keep its own reference to the tensor (tract
    /// drops its clones when the run ends) and refill it for the next run.
    ///
    /// A panic inside tract becomes an error, as in [`Session::build`] (`catch_unwind` costs
    /// nothing on the path that does not panic).
    pub fn run(&mut self, input: TValue) -> TractResult<TVec<TValue>> {
        let state = &mut self.state;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| state.run(tvec!(input)))).unwrap_or_else(
            |panic| {
                Err(TractError::msg(format!(
                    "tract panicked while running the model: {}",
                    panic_message(&panic)
                )))
            },
        )
    }

    /// Runs on the values of a `[1, 3, size, size]` tensor.
    pub fn run_f32(&mut self, input: &[f32]) -> TractResult<TVec<TValue>> {
        let s = self.input_size as usize;
        let tensor = Tensor::from_shape(&[1, 3, s, s], input)?;
        self.run(tensor.into_tvalue())
    }

    /// Runs once with every op timed.
    pub fn profile(&mut self, input: &[f32]) -> TractResult<Profile> {
        let s = self.input_size as usize;
        let tensor = Tensor::from_shape(&[1, 3, s, s], input)?;
        let mut by_node: Vec<(String, String, Duration)> = Vec::new();
        self.state.run_plan_with_eval(tvec!(tensor.into_tvalue()), |ctx, state, node, inputs| {
            let start = Instant::now();
            let r = tract_onnx::tract_core::plan::eval(ctx, state, node, inputs);
            by_node.push((node.name.clone(), node.op().name().to_string(), start.elapsed()));
            r
        })?;
        let mut by_op: BTreeMap<String, (usize, Duration)> = BTreeMap::new();
        for (_, op, d) in &by_node {
            let e = by_op.entry(op.clone()).or_default();
            e.0 += 1;
            e.1 += *d;
        }
        Ok(Profile { by_node, by_op })
    }
}

/// The f32 values of an output.
pub fn values(t: &TValue) -> TractResult<Vec<f32>> {
    Ok(t.to_plain_array_view::<f32>()?.iter().copied().collect())
}

/// The message of a caught panic (`&str` or `String` payloads; anything else is unnamed).
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}
