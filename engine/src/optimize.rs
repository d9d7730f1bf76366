//! tract's optimization, plus the constant folding it leaves undone.
//!
//! tract folds a constant subgraph only while every intermediate value stays within 4 MiB
//! (`CONST_FOLD_MEM_BUDGET` in tract-core's `optim/prop_const.rs`). A quantized convolution
//! needs the sum of its kernel over each output channel (the input zero point multiplies it),
//! and tract computes that sum by casting the whole int8 kernel to i32 first. For BiT's larger
//! kernels (stage 4's 3x3 and the 1x1 projections, 2 M weights and more) the i32 copy is over
//! the budget, so the cast and the sum ran on every frame: about 3.5 ms of a 59 ms int8 run on
//! the reference machine. [`fold_large_constants`] evaluates such chains once, at load time,
//! when the chain ends in a value no larger than its constant inputs.

use std::collections::HashSet;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::konst::Const;
use tract_onnx::tract_core::ops::source::TypedSource;

/// tract's `into_optimized`, then [`fold_large_constants`] and tract's own constant propagation
/// again (so what consumed a folded value folds too).
pub fn optimize(model: TypedModel) -> TractResult<TypedModel> {
    let mut model = model.into_optimized()?;
    if fold_large_constants(&mut model)? > 0 {
        model.prop_consts()?;
        model.compact()?;
    }
    Ok(model)
}

fn mem(values: &[TValue]) -> usize {
    values.iter().map(|t| t.datum_type().size_of() * t.len()).sum()
}

/// Replaces each chain `op(constants) -> single-input successors...` whose last value is no larger
/// than the constants it started from by that value. Returns how many chains were folded.
pub fn fold_large_constants(model: &mut TypedModel) -> TractResult<usize> {
    let mut folded = 0;
    // Nodes already tried and left alone: evaluating them again would give the same answer.
    let mut tried = HashSet::new();
    loop {
        let mut patch = None;
        for id in model.eval_order()? {
            let node = model.node(id);
            if tried.contains(&id)
                || node.op_is::<Const>()
                || node.op_is::<TypedSource>()
                || node.outputs.len() != 1
                || node.outputs[0].fact.konst.is_some()
            {
                continue;
            }
            let facts = model.node_input_facts(id)?;
            if facts.is_empty() || facts.iter().any(|f| f.konst.is_none()) {
                continue;
            }
            tried.insert(id);
            let inputs: TVec<TValue> = facts.iter().map(|f| f.konst.clone().unwrap().into_tvalue()).collect();
            let budget = mem(&inputs);
            let Some(mut value) = node.op.eval_out_of_plan(inputs)? else { continue };
            let mut last = id;
            while mem(&value) > budget {
                let Some(next) = model.single_succ(last)? else { break };
                if next.inputs.len() != 1 || next.outputs.len() != 1 {
                    break;
                }
                let Some(v) = next.op.eval_out_of_plan(value.clone())? else { break };
                value = v;
                last = next.id;
            }
            if value.len() != 1 || mem(&value) > budget {
                continue;
            }
            let name = format!("{}.folded", model.node(last).name);
            let mut p = TypedModelPatch::default();
            let wire = p.add_const(name, value.remove(0).into_arc_tensor())?;
            p.shunt_outside(model, last.into(), wire)?;
            patch = Some(p);
            break;
        }
        match patch {
            Some(p) => {
                p.apply(model)?;
                folded += 1;
            }
            None => break,
        }
    }
    Ok(folded)
}
