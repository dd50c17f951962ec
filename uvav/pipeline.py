"""The FT -> PL pipeline of one job: find or train the fine-tuned model, then the PL stages, then evaluate.

A PL job finds its fine-tuned model by the config that produced it (a content hash of data settings, backbone,
trainer, noise, seed and FT training cases) and the content digest of its data, under
``<paths.cache_dir>/ft/<key>/``, and trains it first when absent (or when its ``model.pt`` no longer matches the
sha256 in its ``info.json``), holding a file lock so that two jobs that need the same model never both train it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from uvav import distributed, preflight
from uvav.cases import result_key
from uvav.config import MODEL_KEY_NEUTRAL, NoiseConfig, key_content
from uvav.data import AVData, load_data
from uvav.data.loading import LoaderOptions
from uvav.loggers import TrainingLogger, open_logger, tracked_run
from uvav.methods import FT, HEAD_ONLY, METHODS, ft_schedule
from uvav.models import MODEL_VERSION
from uvav.models.classifier import AVClassifier, count_parameters
from uvav.outputs import (
    atomic_torch_save,
    atomic_write_json,
    file_lock,
    fingerprint,
    provenance,
    read_json,
    remove_checkpoint,
)
from uvav.recipe import Recipe
from uvav.runtime import autocast_for, setup_runtime
from uvav.train import (
    SALTS,
    Feed,
    FitResult,
    FitSettings,
    JobTiming,
    Scores,
    SharedEncodings,
    SharedViews,
    Stage,
    TokenCache,
    evaluate_split,
    fit,
    freeze_for_prompts,
    metric_name,
)
from uvav.train.encoding_store import EncodingStore
from uvav.weights import build_model
from uvav.weights.zoo import content_key

log = logging.getLogger(__name__)


def ft_config(cfg: DictConfig) -> dict[str, Any]:
    """Everything that determines the fine-tuned model's weights (a local checkpoint file by its content)."""
    neutral = key_content(OmegaConf.to_container(cfg, resolve=True), MODEL_KEY_NEUTRAL)
    is_ft = cfg.method.name == FT
    epochs, lr = ft_schedule(cfg)
    return {
        "data": neutral["data"],
        "backbone": neutral["backbone"],
        "trainer": neutral["trainer"],
        "noise": neutral["noise"],
        "seed": cfg.seed,
        "train_cases": list(cfg.scenario.train_cases) if is_ft else [cfg.method.base_scenario],
        # the rate of method=ft's own training cases (the FT base of other methods trains on one case)
        **({"missing_rate": cfg.scenario.missing_rate} if is_ft and cfg.scenario.get("missing_rate") is not None
           else {}),
        "epochs": epochs,
        "lr": lr,
        "model_version": MODEL_VERSION,
        **content_key(cfg.backbone.checkpoint),
    }


def open_data(cfg: DictConfig) -> AVData:
    """The job's data, its ``info["content_digest"]`` naming its content: the feature store's digest of its chunks'
    sha256s (:attr:`uvav.data.store.FeatureStore.content_digest`); for data read from no store (generated), a
    digest of the settings that generate it."""
    data = load_data(cfg.data, str(cfg.data.cache_dir or Path(cfg.paths.cache_dir) / "features"))
    if "content_digest" not in data.info:  # the data settings that can change a number (as in ft_config)
        settings = key_content(OmegaConf.to_container(cfg, resolve=True), MODEL_KEY_NEUTRAL)["data"]
        data.info["content_digest"] = "settings:" + fingerprint(settings)
    return data


def data_digest(data_info: dict[str, Any] | None) -> str | None:
    """The content digest recorded in a job's ``data_info`` (None for a record made before digests)."""
    return (data_info or {}).get("content_digest")


def ft_key(cfg: DictConfig, data_info: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The FT model's cache key and what it hashes: :func:`ft_config` and the content digest of its data."""
    spec = {**ft_config(cfg), "data_digest": data_digest(data_info)}
    return fingerprint(spec), spec


@dataclass
class Context:
    cfg: DictConfig
    data: AVData
    noise: NoiseConfig
    device: torch.device
    autocast: Any
    job_dir: Path
    resume_dir: Path  # where this job's resumable stage checkpoints live (found again by a relaunch)
    logger: TrainingLogger = field(default_factory=TrainingLogger)  # the training curves (logger group)
    timing: JobTiming = field(default_factory=JobTiming)  # where the job's time went (metrics.json's timing)
    encodings: SharedEncodings | None = None  # the frozen base's evaluation encodings, made on first use
    views: SharedViews | None = None  # the frozen base's cached training views (frozen-base jobs)
    store: EncodingStore | None = None  # where the shared encodings outlive the job (a stored FT model's)
    base: dict[str, Any] | None = None  # what identifies that FT model in the store's keys

    @property
    def cache_dir(self) -> Path:
        return Path(self.cfg.paths.cache_dir).expanduser()

    @property
    def options(self) -> LoaderOptions:
        return LoaderOptions.for_device(self.cfg.data.num_workers, self.device)

    def feed(self) -> Feed:
        """The training and validation data of every stage, and where cached encoder outputs may go."""
        method = self.cfg.method  # the cache settings exist for frozen-base methods (FT caches nothing)
        cache = {k: method[k] for k in ("cache_dtype", "cache_device_gb") if k in method}  # else Feed's defaults
        return Feed(self.data.train, self.data.val, self.noise, self.options,
                    (self.cfg.data.freq_mask, self.cfg.data.time_mask, self.cfg.data.image_shift),
                    missing_rate=self.cfg.scenario.get("missing_rate"), token_dir=self.resume_dir, **cache)

    def evaluate(self, stage: Stage, split: str) -> Scores:
        """:class:`Scores` of ``stage`` on ``split`` (test or val) under every evaluation case, in each of the
        stage's prompt modes, keyed ``values[result key][case]`` (accuracy, or mAP for multi-label data)."""
        scores = self._scores(stage, split)
        return Scores({result_key(stage.name, mode): per_case for mode, per_case in scores.values.items()},
                      scores.metric, {result_key(stage.name, mode): ap for mode, ap in scores.per_class.items()})

    def _scores(self, stage: Stage, split: str) -> Scores:
        """Scores from the shared encodings for a stage that shares them (one process; encoded on first use, timed
        as encoding), else streamed; the scoring timed as the stage's evaluation."""
        if not stage.shares_encodings or distributed.world_size() > 1:
            with self.timing.measure(self.timing.evaluate, stage.name):
                return evaluate_split(stage, getattr(self.data, split), self.noise, SALTS[split], stage.eval_modes,
                                      self.device, self.cfg.trainer.eval_batch_size, self.autocast, self.options,
                                      progress=f"{stage.name}: scoring {split}" if self.cfg.trainer.progress else None)
        self.shared_tokens(stage.model, split)
        with self.timing.measure(self.timing.evaluate, stage.name):
            return self.shared_encodings().evaluate(stage, split)

    def shared_encodings(self) -> SharedEncodings:
        """The job's shared evaluation encodings (each split encoded on first use)."""
        if self.encodings is None:
            feed = self.feed()
            self.encodings = SharedEncodings({"val": self.data.val, "test": self.data.test}, self.noise, self.device,
                                             self.cfg.trainer.eval_batch_size, self.autocast, self.options,
                                             self.resume_dir, feed.cache_device_gb * 2**30,
                                             bool(self.cfg.trainer.progress) and distributed.is_main(), self.store,
                                             self.base)
        return self.encodings

    def shared_tokens(self, model: AVClassifier, split: str) -> TokenCache:
        """The shared encodings of ``split``, encoded now by ``model``'s encoders (the base's) when absent and then
        timed as encoding."""
        encodings = self.shared_encodings()
        if split not in encodings.caches:
            encodings.tokens(model, split)
            self.timing.encode[split] = encodings.encode_s[split]
        return encodings.caches[split]


def ensure_ft_model(ctx: Context) -> tuple[AVClassifier, dict[str, Any]]:
    """Load the fine-tuned model for this config, or train it (once, under a lock) and store it."""
    key, spec = ft_key(ctx.cfg, ctx.data.info)
    folder = ctx.cache_dir / FT / key
    main_rank = distributed.is_main()  # rank 0 alone locks, decides and writes; every rank trains
    with file_lock(ctx.cache_dir / FT / f"{key}.lock") if main_rank else contextlib.nullcontext():
        stored = _stored_ft_model(folder) if main_rank else None
        info = distributed.from_main(stored[0] if stored else None)
        if info is not None:
            # the stored weights replace them all
            model, _ = build_model(ctx.cfg, ctx.data.num_classes, ctx.device, initial_weights=False)
            source = io.BytesIO(stored[1]) if stored else folder / "model.pt"  # rank 0: the bytes it verified
            model.load_state_dict(torch.load(source, map_location=ctx.device, weights_only=True))
            log.info("FT model %s reused from %s", key, folder)
            return model, {**info, "reused": True}
        model, weights = build_model(ctx.cfg, ctx.data.num_classes, ctx.device)
        stage = Stage.finetune(model, spec["train_cases"], name=FT, epochs=spec["epochs"], lr=spec["lr"],
                               weight_decay=ctx.cfg.trainer.weight_decay,
                               head_lr_scale=ctx.cfg.trainer.head_lr_scale, recipe=Recipe.of(ctx.cfg.trainer))
        log.info("training FT model %s on %s (%d epochs)", key, spec["train_cases"], spec["epochs"])
        result = _timed_fit(ctx, stage, ctx.cfg.seed, folder / "last.pt")
        info = {
            "key": key, "spec": spec, "best_epoch": result.best_epoch, "best_val": result.best_val,
            "history": result.history, "resources": result.resources,
            "params": {"trainable": count_parameters(model, True), "total": count_parameters(model)},
            "initial_weights": weights,
            **({"weight_average": result.weight_average} if result.weight_average else {}),
        }
        if main_rank:
            info["model_sha256"] = atomic_torch_save(folder / "model.pt", model.state_dict())
            info["provenance"] = provenance()
            atomic_write_json(folder / "info.json", info)
            remove_checkpoint(folder / "last.pt")
        return model, {**info, "reused": False}


def _stored_ft_model(folder: Path) -> tuple[dict[str, Any], bytes] | None:
    """The stored FT model's ``info.json`` and ``model.pt`` bytes when those bytes are the ones recorded there (one
    read, hashed and then loaded from memory: ~1 s per GB); else None, with a WARNING naming the file when it is
    there but differs (retrained)."""
    model, info = folder / "model.pt", read_json(folder / "info.json")
    if info is None or not model.exists():
        return None
    data = model.read_bytes()
    if hashlib.sha256(data).hexdigest() != info.get("model_sha256"):
        log.warning("FT model %s does not match the sha256 recorded in its info.json (edited or damaged): "
                    "training it again", model)
        return None
    return info, data


def run_pipeline(cfg: DictConfig, job_dir: Path, resume_dir: Path | None = None) -> dict[str, Any]:
    """Run one job and return its ``metrics.json`` content (without writing it). Stage checkpoints go to
    ``resume_dir`` (default: the job folder), so that the same job started again resumes from them.

    Every job has the FT model (trained or found). A frozen-base method then trains the head-only baseline and
    its own stage (:meth:`uvav.methods.Method.build_stage`) on frozen copies of it."""
    started = time.perf_counter()
    method = METHODS.get(cfg.method.name)
    device = setup_runtime(cfg)
    if cfg.trainer.eval_batch_size == 0:  # as large as memory allows: the size every later step reads
        cfg.trainer.eval_batch_size = preflight.eval_batch_size(cfg, device)
        log.info("evaluation batches of %d rows (trainer.eval_batch_size=0)", cfg.trainer.eval_batch_size)
    preflight.check(cfg, device)  # refuses (ConfigError) a step that cannot fit the device's memory, before any work
    decode_started = time.perf_counter()
    with distributed.main_first():  # rank 0 builds the feature store; the others open it
        data = open_data(cfg)
    ctx = Context(cfg, data, NoiseConfig.of(cfg.noise), device, autocast_for(device, cfg.trainer.precision),
                  job_dir, resume_dir or job_dir,
                  open_logger(cfg.get("logger"), job_dir, distributed.is_main(), tracked_run(cfg, job_dir)),
                  JobTiming(decode=time.perf_counter() - decode_started))
    log.info("data: %s, device: %s, loader workers: %d", data.sizes(), device, ctx.options.workers)
    try:
        metrics = method.run_job(ctx) if not method.classifies else _classify_job(ctx, method, started)
        metrics.setdefault("wall_time_s", round(time.perf_counter() - started, 2))  # a plugin's job may not say
        log.info("time: %s", ctx.timing.describe(metrics["wall_time_s"]))
        # the data's content digest reaches every job's record
        return {"data_info": data.info, **metrics, "timing": ctx.timing.record()}
    finally:
        for shared in (ctx.encodings, ctx.views, ctx.store):
            if shared is not None:
                shared.close()
        ctx.logger.close()


def _classify_job(ctx: Context, method, started: float) -> dict[str, Any]:
    """FT (found or trained) or, with ``method.base=pretrained``, the pretrained model; then the frozen-base
    method's stages; the job's metrics."""
    cfg, device, data = ctx.cfg, ctx.device, ctx.data

    if method.frozen_base and cfg.method.base == "pretrained":
        # the pretrained backbone with a new head: nothing is fine-tuned
        base_model, weights = build_model(ctx.cfg, ctx.data.num_classes, ctx.device)
        base_info = {"key": None, "initial_weights": weights}
        accuracy, val, per_class_ap, stages, final = {}, {}, {}, {}, None
    else:
        base_model, base_info = ensure_ft_model(ctx)
        if cfg.paths.encodings_gb > 0 and base_info.get("model_sha256") and distributed.world_size() == 1:
            ctx.store = EncodingStore(ctx.cache_dir / "encodings", cfg.paths.encodings_gb)
            ctx.base = {"base": base_info["key"], "weights": base_info["model_sha256"], "device": device.type,
                        "torch": torch.__version__}
        final = Stage.trained(FT, base_model, None, base_info["spec"]["train_cases"], shares_encodings=True,
                              shares_features=True)
        test = ctx.evaluate(final, "test")
        accuracy, per_class_ap, val = test.values, test.per_class, ctx.evaluate(final, "val").values
        stages = {FT: {**{k: base_info[k] for k in ("key", "best_epoch", "best_val", "reused", "weight_average")
                          if k in base_info},
                       "params": base_info["params"], "resources": base_info["resources"]}}
    base_model.cpu()  # each later stage trains its own copy on the device; this one is only copied from

    if method.frozen_base:
        baseline = METHODS.get(HEAD_ONLY)  # its stage and seed: the head-only baseline's
        # every sharing stage trains on the same views (head only's seed)
        ctx.views = SharedViews(cfg.seed + baseline.stage_seed_offset, ctx.store, ctx.base)
        if cfg.method.head_only_baseline:
            head = baseline.build_stage(cfg, freeze_for_prompts(base_model, True).to(device), device)
            _train_and_eval(ctx, head, cfg.seed + baseline.stage_seed_offset, accuracy, val, stages, per_class_ap)
        seed = cfg.seed + method.stage_seed_offset
        with torch.random.fork_rng(devices=[]):  # its new parameters start from its seed, whatever ran before
            torch.manual_seed(seed)  # (a resumed FT would otherwise leave the generator elsewhere)
            final = method.build_stage(cfg, freeze_for_prompts(base_model, cfg.method.train_head).to(device), device)
        if tuple(final.eval_modes) != tuple(method.eval_modes):
            raise RuntimeError(f"method {method.name}: its stage scores {final.eval_modes}, its registry entry "
                               f"reports {method.eval_modes}")
        _train_and_eval(ctx, final, seed, accuracy, val, stages, per_class_ap)

    if distributed.is_main():
        atomic_torch_save(ctx.job_dir / "model.pt", {
            "model": final.model.state_dict(), "bank": final.bank.state_dict() if final.bank else None,
            "class_names": data.class_names, "ft_key": base_info["key"], "provenance": provenance(),
        })
    main_key = method.main_key
    own = stages[method.name]  # with weight averaging, the FT model is the average: its validation accuracy
    objective_value = ((own.get("weight_average") or {}).get("val_acc", own["best_val"]) if cfg.objective == "val_acc"
                       else val[main_key][cfg.objective.removeprefix("val_")])
    return {
        "accuracy": accuracy, "val": val, "stages": stages, "main_mode": main_key,
        "metric": metric_name(data.multi_label), **({"per_class_ap": per_class_ap} if data.multi_label else {}),
        "objective": {"name": cfg.objective, "value": objective_value},
        "split": {**data.sizes(), "how": data.info.get("split")}, "data_info": data.info,
        "class_names": data.class_names, "initial_weights": base_info.get("initial_weights"),
        "wall_time_s": round(time.perf_counter() - started, 2),
        "device": str(device),
    }


def _train_and_eval(ctx: Context, stage: Stage, seed: int, accuracy: dict[str, Any], val: dict[str, Any],
                    stages: dict[str, Any], per_class_ap: dict[str, Any]) -> None:
    """Fit a frozen-model stage with a resumable checkpoint in ``ctx.resume_dir``; add its test and validation
    accuracy or mAP (``{result key: {case: value}}``), its test per-class AP (multi-label data) and its stage
    record to the job's."""
    result = _timed_fit(ctx, stage, seed, ctx.resume_dir / f"last_{stage.name}.pt",
                        views=ctx.views if stage.shares_encodings else None)
    test = ctx.evaluate(stage, "test")
    accuracy.update(test.values)
    per_class_ap.update(test.per_class)
    val.update(ctx.evaluate(stage, "val").values)
    trainable = sum(p.numel() for p in stage.trainable())
    stages[stage.name] = {
        "best_epoch": result.best_epoch, "best_val": result.best_val, "history": result.history,
        "resources": result.resources,
        "params": {"trainable": trainable,
                   "total": count_parameters(stage.model) + (count_parameters(stage.bank) if stage.bank else 0)}}


def _timed_fit(ctx: Context, stage: Stage, seed: int, checkpoint_path: Path, views=None) -> FitResult:
    """:func:`~uvav.train.fit` of ``stage`` (on the job's shared training ``views`` if given), its time added to
    ``ctx.timing`` (building its cache as encoding)."""
    if views is not None and distributed.world_size() == 1:  # its cached validation set: copied from the shared one
        views.val_tokens = ctx.shared_tokens(stage.model, "val")
    with ctx.timing.measure(ctx.timing.train, stage.name):
        result = fit(stage, ctx.feed(), FitSettings.of(ctx.cfg.trainer), ctx.device, seed=seed, autocast=ctx.autocast,
                     checkpoint_path=checkpoint_path, logger=ctx.logger, views=views)
    cache = result.resources.get("cached_features") or {}
    if cache.get("build_s"):  # its training cache: encoding
        ctx.timing.move(ctx.timing.train, stage.name, ctx.timing.encode, f"{stage.name}_train", cache["build_s"])
    return result
