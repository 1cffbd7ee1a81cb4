"""Where a training step runs: one device, several devices of one machine, or several machines.

Both stages build their step once, as a *replica function* (a batch in, the train op and its
scalars out), and `build_step` runs it on every replica. One device is the one-replica case of
the same path: the step is built as it always was (plain variables, no strategy), so one-device
runs keep their numbers to the last bit.

- ``mirrored``: `tf.distribute.MirroredStrategy` over this machine's GPUs (or, for testing,
  logical CPU devices), graph mode, a plain session.
- ``multi_worker``: `tf.distribute.MultiWorkerMirroredStrategy` (synchronous all-reduce) over the
  workers ``TF_CONFIG`` names (`rankiqa.run.cluster`); each process starts a `tf.distribute.Server`
  with the very session config the strategy updated (with another config every worker hangs
  in the variable initialiser, silently).

The dataset yields the *global* batch; each replica gets an equal slice of it along the first
axis, which for ranking batches falls on whole references (a reference's levels stay on one
replica: the ranking operator needs all of them). Every worker reads the whole list in the same
seeded order and keeps its own slice of each global batch, so a global step uses each reference
once and equals a one-process step with the same global batch. The v1 optimizers *sum* replica
gradients, so each replica minimises its loss divided by the replica count.
"""

import contextlib
import warnings
from dataclasses import dataclass
from typing import Optional, Tuple

from rankiqa.run import cluster as cluster_lib
from rankiqa.run import device as device_lib
from rankiqa.run.cluster import Cluster
from rankiqa.compat import tf
from rankiqa.errors import InputError

STRATEGIES = device_lib.STRATEGIES


@dataclass
class Placement:
    """How and where this process trains; from `get_placement`."""

    kind: str  # one_device | mirrored | multi_worker
    replicas: int  # in the whole job, all workers together
    precision: str  # fp32 | mixed (resolved, never auto)
    gpu: bool = False  # whether the replicas are GPUs
    device: Optional[str] = None  # one_device: a TF device string, None for TF's choice
    devices: Tuple[str, ...] = ()  # mirrored: this machine's replica devices
    cluster: Optional[Cluster] = None  # multi_worker
    strategy: object = None  # None for one device
    target: str = ""  # the tf.Session target ("" in process, a server's grpc:// address)
    config: object = None  # the tf.Session ConfigProto

    @property
    def is_chief(self):
        """Whether this process writes the run folder (checkpoints, eval.json, summaries)."""
        return self.cluster is None or self.cluster.is_chief

    @property
    def loss_scaling(self):
        """float16 (mixed precision on GPUs) needs dynamic loss scaling; bfloat16 does not."""
        return self.precision == "mixed" and self.gpu

    def describe(self):
        if self.kind == "one_device":
            where = self.device or "TensorFlow's default device"
        elif self.kind == "mirrored":
            where = ", ".join(self.devices)
        else:
            where = self.cluster.describe()
        return f"{self.kind}: {self.replicas} replica(s) on {where}, precision {self.precision}"

    def scope(self):
        """Where the graph's variables and training ops go."""
        if self.strategy is not None:
            return self.strategy.scope()
        return tf.device(self.device) if self.device else contextlib.nullcontext()

    def scoring_scope(self):
        """Where a scoring branch of the training graph goes (validation, the probe): this
        device, or under a strategy outside its scope, reading the local copies of the
        variables (inside it, the branch would be one more replicated computation)."""
        if self.strategy is None and self.device:
            return tf.device(self.device)
        return contextlib.nullcontext()

    def check_divides(self, value, key):
        """`value` (a global batch size, config key `key`) splits evenly over the replicas."""
        if value % self.replicas:
            raise InputError(f"{key}={value} does not divide among {self.replicas} replicas "
                             f"({self.kind}); make it a multiple of {self.replicas}")


def _gpus():
    return tf.config.list_physical_devices("GPU")


def _auto_kind(cluster):
    if cluster is not None and cluster.size > 1:
        return "multi_worker"
    return "mirrored" if len(_gpus()) > 1 else "one_device"


def _mirrored_devices(devices, device):
    """This machine's replica devices: `devices` GPUs (0: all), or with ``--device cpu``
    `devices` logical CPU devices (testing a mirrored run without GPUs)."""
    gpus = _gpus()
    if device == "cpu" or not gpus:
        if device == "gpu":
            raise InputError("--device gpu: TensorFlow sees no GPU here (use --device auto or cpu)")
        if devices < 2 and device != "cpu":
            raise InputError("mirrored training on this machine needs GPUs (TensorFlow sees "
                             "none); for a test on the CPU pass --device cpu --devices N")
        return tuple(f"/device:CPU:{i}" for i in range(max(devices, 1)))
    if devices > len(gpus):
        raise InputError(f"--devices {devices}: TensorFlow sees {len(gpus)} GPU(s) here")
    return tuple(f"/device:GPU:{i}" for i in range(devices or len(gpus)))


def get_placement(strategy="auto", devices=0, device="auto", precision="fp32"):
    """Decides where this process trains, and starts its server in a multi-worker job.

    Args:
      strategy: auto (multi_worker when ``TF_CONFIG`` names several tasks, else mirrored over
        every GPU when there are several, else one device) | one_device | mirrored |
        multi_worker.
      devices: replicas on this machine for mirrored (0: every GPU).
      device: auto | cpu | gpu (`rankiqa.run.device.get_device`).
      precision: fp32 | mixed | auto (`rankiqa.run.device.resolve_precision`).

    Raises:
      InputError: an unknown strategy, devices that are not there, a bad ``TF_CONFIG``.
    """
    if strategy not in STRATEGIES:
        raise InputError(f"unknown strategy {strategy!r}; choose from {list(STRATEGIES)}")
    if devices < 0:
        raise InputError(f"--devices must be >= 0, got {devices}")
    device_name = device_lib.get_device(device)
    cluster = cluster_lib.from_environment()
    kind = _auto_kind(cluster) if strategy == "auto" else strategy
    gpu = device == "gpu" or (device == "auto" and bool(_gpus()))
    if kind == "one_device":
        if devices > 1:
            raise InputError(f"--devices {devices} needs the mirrored strategy, not one_device")
        precision = device_lib.resolve_precision(precision, gpu=gpu)
        return Placement("one_device", 1, precision, gpu, device=device_name,
                         config=device_lib.session_config(precision))
    if kind == "mirrored":
        names = _mirrored_devices(devices, device)
        gpu = "GPU" in names[0]
        precision = device_lib.resolve_precision(precision, gpu=gpu)  # the replicas' kind decides
        return Placement("mirrored", len(names), precision, gpu, devices=names,
                         strategy=tf.distribute.MirroredStrategy(devices=list(names)),
                         config=device_lib.session_config(precision,
                                                      cpu_devices=0 if gpu else len(names)))
    if cluster is None:
        raise InputError(f"strategy multi_worker needs {cluster_lib.ENV} naming the workers "
                         "(`rankiqa launch --workers N -- ...` sets it for local workers)")
    if devices:
        raise InputError("--devices is for mirrored: each worker of a multi-worker job uses "
                         "every GPU it sees (choose them with CUDA_VISIBLE_DEVICES)")
    precision = device_lib.resolve_precision(precision, gpu=gpu)
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    strategy_obj = tf.distribute.experimental.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    _pack_gradients(strategy_obj)
    # the server must start with the very config the strategy updated: with any other, every
    # worker waits forever in the variable initialiser
    config = strategy_obj.update_config_proto(device_lib.session_config(precision))
    server = tf.distribute.Server(resolver.cluster_spec(), job_name=resolver.task_type,
                                  task_index=resolver.task_id, config=config, start=True)
    return Placement("multi_worker", strategy_obj.num_replicas_in_sync, precision, gpu,
                     device=device_name, cluster=cluster, strategy=strategy_obj,
                     target=server.target, config=config)


# Gradients all-reduced in packs of this many bytes, each started as soon as its gradients
# exist, instead of one all-reduce of every gradient after the whole backward pass (TF's default
# here). P7, resnet_v2_50 (100 MB of gradients), 2 loopback workers: 1.05-1.21x with 4 MB packs
# against 0.95-0.98x with one pack; 1 MB and 16 MB packs gave 1.12x and 1.08x.
ALLREDUCE_PACK_BYTES = 4 << 20


def _pack_gradients(strategy):
    """Sets `ALLREDUCE_PACK_BYTES` on a v1 `MultiWorkerMirroredStrategy`, whose constructor
    takes no communication options; its batch all-reduce (the optimizer's gradient sum) merges
    these (TF 2.15-2.21). A TensorFlow without the attribute trains unpacked, as before."""
    if hasattr(strategy.extended, "_communication_options"):
        strategy.extended._communication_options = (
            tf.distribute.experimental.CommunicationOptions(bytes_per_pack=ALLREDUCE_PACK_BYTES))


def make_iterator(strategy, dataset):
    """The input iterator of a strategy (call in its scope): each replica's ``get_next()`` is
    its equal slice of every global batch."""
    # every worker reads the same seeded stream and keeps its slice of each global batch;
    # sharding by file would need one file per element
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    with warnings.catch_warnings():  # graph mode reads the options the legacy way: fine here
        warnings.filterwarnings("ignore", "To make it possible to preserve tf.data options")
        return strategy.make_dataset_iterator(dataset.with_options(options))


def build_step(placement, dataset, replica_fn):
    """Builds the training step on every replica.

    Args:
      placement: from `get_placement`.
      dataset: global batches (whose first axis splits over replicas).
      replica_fn: ``replica_fn(batch) -> (train_op, {name: scalar})``; called once per replica
        with its slice, in the strategy's replica context. Its train op must come from
        `rankiqa.train.loop.build_train_op` with ``replicas=placement.replicas``.

    Returns:
      (train op evaluating to the global mean loss, ``{name: scalar}`` averaged over replicas,
      the input iterator's initializer or None).
    """
    if placement.strategy is None:
        batch = tf.data.make_one_shot_iterator(dataset).get_next()
        with placement.scope():
            tf.train.get_or_create_global_step()
            train_op, scalars = replica_fn(batch)
        return train_op, scalars, None
    strategy = placement.strategy
    with strategy.scope():
        iterator = make_iterator(strategy, dataset)
        tf.train.get_or_create_global_step()
        names = []

        def stacked_fn(batch):  # the scalars as one vector: one all-reduce, not one each
            train_op, scalars = replica_fn(batch)
            names[:] = sorted(scalars)
            return train_op, tf.stack([tf.cast(scalars[n], tf.float32) for n in names])

        train_ops, stacked = strategy.run(stacked_fn, args=(iterator.get_next(),))
        # each replica minimised loss / replicas: their sum is the global mean; reducing the
        # train ops also makes one fetch run every replica's step
        loss = strategy.reduce(tf.distribute.ReduceOp.SUM, train_ops, axis=None)
        mean = strategy.reduce(tf.distribute.ReduceOp.MEAN, stacked, axis=None)
    return loss, {n: mean[i] for i, n in enumerate(names)}, iterator.initialize()
