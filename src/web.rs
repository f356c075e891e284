//! The browser demo's entry points (wasm32 only): `WebToy` holds one WebGPU device and several toy runs
//! (`ToySession`s) that train side by side on the same seed, so web/app.js can draw the paper's figures live.
//!
//! The page asks for a few epochs at a time (`step`) from its animation-frame loop and awaits each call: every
//! readback is a `map_async` that yields to the browser, so the page never freezes. Everything crosses the boundary
//! as JSON strings (serde), which keeps the JavaScript side free of generated class wrappers:
//!
//!   const toy = await WebToy.create(JSON.stringify({ runs: [toyConfig, ...] }));
//!   const info = JSON.parse(toy.info());        // adapter, runs (label, config, pi0, error)
//!   const out = JSON.parse(await toy.step(20));  // per run: new ToyRecords, epoch, (P, R) log-probs

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;

use crate::toy::{session::sft_phase, ToyConfig, ToyRecord, ToySession, PROMPTS, RESPONSES};
use crate::Gpu;

/// Route Rust panics to the browser console with their message (called once by `WebToy::create`).
fn install_panic_hook() {
    console_error_panic_hook::set_once();
}

/// What the page sends to `WebToy::create`.
#[derive(Deserialize)]
struct WebConfig {
    /// One ToyConfig per run shown side by side.
    runs: Vec<ToyConfig>,
}

struct Run {
    cfg: ToyConfig,
    label: String,
    /// None when the constructor failed (e.g. a method this build lacks) or training stopped on an error.
    session: Option<ToySession>,
    error: Option<String>,
    /// pi0: (P, R) probabilities after SFT (empty when SFT itself failed).
    sft_probs: Vec<f32>,
}

struct Inner {
    gpu: Gpu,
    runs: Vec<Run>,
}

/// Several toy runs on one WebGPU device.
#[wasm_bindgen]
pub struct WebToy {
    /// Taken out for the duration of a `step`, so overlapping calls are refused instead of racing.
    inner: RefCell<Option<Inner>>,
}

#[derive(Serialize)]
struct RunInfo<'a> {
    label: &'a str,
    config: &'a ToyConfig,
    error: Option<&'a str>,
    /// (P, R) row-major probabilities after SFT (pi0).
    sft_probs: &'a [f32],
}

#[derive(Serialize)]
struct Info<'a> {
    adapter: &'a crate::gpu::GpuInfo,
    prompts: usize,
    responses: usize,
    runs: Vec<RunInfo<'a>>,
}

#[derive(Serialize)]
struct RunStep {
    /// Updates done so far.
    epoch: usize,
    finished: bool,
    error: Option<String>,
    /// Records logged during this step (metrics.jsonl lines).
    records: Vec<ToyRecord>,
    /// The latest (P, R) natural-log probabilities read back, row-major; in log space so that values far below
    /// f32's smallest normal probability stay visible.
    log_probs: Vec<f32>,
}

#[derive(Serialize)]
struct StepOut {
    runs: Vec<RunStep>,
    /// True when every run has finished or stopped on an error.
    done: bool,
}

/// Poll several futures to completion together, so the runs' readbacks overlap instead of queueing one after
/// another (each `map_async` costs a round trip to the GPU process).
async fn join_all<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut outs: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(move |cx: &mut Context<'_>| {
        let mut pending = false;
        for (f, o) in futs.iter_mut().zip(outs.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *o = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(outs.iter_mut().map(|o| o.take().expect("joined future output")).collect())
        }
    })
    .await
}

fn js_err(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

#[wasm_bindgen]
impl WebToy {
    /// Acquire the WebGPU device, run the SFT phase once per distinct (scenario, seed, hidden, first_bias, SFT
    /// schedule) and build every run from it. A run whose constructor fails (RM + PPO in a build without it, an
    /// invalid parameter) is kept with its error so the page can say why; only a missing GPU fails the whole call.
    pub async fn create(config_json: String) -> Result<WebToy, JsError> {
        install_panic_hook();
        let wc: WebConfig = serde_json::from_str(&config_json).map_err(|e| js_err(format!("bad demo config: {e}")))?;
        let gpu = Gpu::new().await.map_err(js_err)?;
        // (scenario, seed, hidden, first_bias, sft_epochs, sft_lr bits) -> (parameters, (P, R) probabilities).
        type SftKey = (u8, u64, usize, bool, usize, u32);
        type SftPhase = (Vec<f32>, Vec<f32>);
        let mut sft_cache: Vec<(SftKey, SftPhase)> = Vec::new();
        let mut runs = Vec::new();
        for cfg in wc.runs {
            let label = cfg.run_name();
            let mut sft_probs = Vec::new();
            // A shader the browser's WGSL compiler (Tint, stricter than naga in places) rejects only shows up as a
            // validation error on the device: catch it here so the page reports it instead of plotting garbage.
            let scope = gpu.device.push_error_scope(wgpu::ErrorFilter::Validation);
            let built: crate::Result<ToySession> = async {
                cfg.validate()?;
                let key: SftKey =
                    (cfg.scenario, cfg.seed, cfg.hidden, cfg.first_bias, cfg.sft_epochs, cfg.sft_lr.to_bits());
                let sft = match sft_cache.iter().find(|(k, _)| *k == key) {
                    Some((_, s)) => s.clone(),
                    None => {
                        let s = sft_phase(&gpu, &cfg).await?;
                        sft_cache.push((key, s.clone()));
                        s
                    }
                };
                // Kept for the page even when the method itself cannot be built.
                sft_probs = sft.1.clone();
                ToySession::with_sft(&gpu, &cfg, sft).await
            }
            .await;
            let built = match (built, scope.pop().await) {
                (Ok(_), Some(e)) => {
                    Err(crate::Error::Gpu(format!("the browser's WebGPU rejected a dpo3d kernel: {e}")))
                }
                (r, _) => r,
            };
            let run = match built {
                Ok(session) => Run { cfg, label, session: Some(session), error: None, sft_probs },
                Err(e) => Run { cfg, label, session: None, error: Some(e.to_string()), sft_probs },
            };
            runs.push(run);
        }
        Ok(WebToy { inner: RefCell::new(Some(Inner { gpu, runs })) })
    }

    /// JSON: the adapter and the runs (label, config, pi0 probabilities, constructor error).
    pub fn info(&self) -> Result<String, JsError> {
        let guard = self.inner.borrow();
        let inner = guard.as_ref().ok_or_else(|| js_err("info() called while a step is in flight"))?;
        let info = Info {
            adapter: &inner.gpu.info,
            prompts: PROMPTS,
            responses: RESPONSES,
            runs: inner
                .runs
                .iter()
                .map(|r| RunInfo {
                    label: &r.label,
                    config: &r.cfg,
                    error: r.error.as_deref(),
                    sft_probs: &r.sft_probs,
                })
                .collect(),
        };
        serde_json::to_string(&info).map_err(js_err)
    }

    /// Train every unfinished run `epochs` more epochs (together, on the same device) and return, as JSON, each
    /// run's new records and latest (P, R) log-probabilities. A run that fails (a non-finite metric) stops with its
    /// error; the others go on.
    pub async fn step(&self, epochs: usize) -> Result<String, JsError> {
        let mut inner =
            self.inner.borrow_mut().take().ok_or_else(|| js_err("step() called while another step is in flight"))?;
        let gpu = &inner.gpu;
        let futs: Vec<_> = inner
            .runs
            .iter_mut()
            .map(|run| async move {
                let mut records = Vec::new();
                if let (Some(session), None) = (run.session.as_mut(), &run.error) {
                    if !session.finished() {
                        match session.advance(gpu, epochs).await {
                            Ok(r) => records = r,
                            Err(e) => run.error = Some(e.to_string()),
                        }
                    }
                }
                records
            })
            .collect();
        let all_records = join_all(futs).await;
        let mut out = StepOut { runs: Vec::new(), done: true };
        for (run, records) in inner.runs.iter().zip(all_records) {
            // A run that stopped on an error keeps its last state for display and trains no further.
            let step = match &run.session {
                Some(s) => RunStep {
                    epoch: s.epoch,
                    finished: s.finished() || run.error.is_some(),
                    error: run.error.clone(),
                    records,
                    log_probs: s.members[0].last_log_probs.clone(),
                },
                None => RunStep { epoch: 0, finished: true, error: run.error.clone(), records, log_probs: Vec::new() },
            };
            out.done &= step.finished;
            out.runs.push(step);
        }
        *self.inner.borrow_mut() = Some(inner);
        serde_json::to_string(&out).map_err(js_err)
    }

    /// The adapter's name, for the page's header.
    pub fn adapter_name(&self) -> String {
        self.inner.borrow().as_ref().map(|i| i.gpu.info.name.clone()).unwrap_or_default()
    }
}
