"""Training under ``tf.distribute.MultiWorkerMirroredStrategy`` with our own distributed step.

Keras 3's ``fit`` cannot train with several workers (keras-team/keras#20585): it all-reduces
the first input batch with ``strategy.reduce``, which takes no nested structure (the
``PerReplica`` error), and it reduces the scalar metrics of a step with ``axis=0``. :func:`fit`
does what ``fit`` does, with public ``tf.distribute`` APIs: the same tf.data pipeline distributed
over the workers, one ``tf.function`` step that runs the forward and backward pass on every
replica (the loss averaged over the global batch; the Keras optimizer all-reduces the
gradients), and the same Keras callbacks, progress lines and history.
"""

from __future__ import annotations

import keras
from keras import ops


def is_multi_worker(strategy) -> bool:
    """Whether ``strategy`` is a MultiWorkerMirroredStrategy (one worker or several)."""
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def fit(model, strategy, dataset, *, loss, metric, batch_size: int, epochs: int, initial_epoch: int,
        steps_per_epoch: int, callbacks=(), verbose: int = 2):
    """Train ``model`` (built and compiled under ``strategy.scope()``) as ``model.fit`` would.

    ``dataset`` is the endless tf.data pipeline of ``(inputs, clean)`` global batches of
    ``batch_size``; each worker takes its share of every batch. ``loss(clean, output)`` returns
    per-pixel values (a Keras loss function), ``metric(clean, output)`` one value per image; the
    logs hold their running means over the epoch as ``loss`` and ``metric.__name__``, as ``fit``
    logs them. Returns the History callback.
    """
    import tensorflow as tf

    options = tf.data.Options()
    # Every worker runs the whole seeded pipeline and keeps its share of each global batch. The
    # images are read through Python (or come from arrays): there are no files for AUTO to split.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    iterator = iter(strategy.experimental_distribute_dataset(dataset.with_options(options)))
    if not model.optimizer.built:  # a resumed optimizer comes built, with its saved state
        with strategy.scope():
            model.optimizer.build(model.trainable_variables)  # variables cannot be made inside the step

    def replica_step(inputs, clean):
        with tf.GradientTape() as tape:
            output = model(inputs, training=True)
            per_image = ops.mean(loss(clean, output), axis=(1, 2))
            scaled = tf.nn.compute_average_loss(per_image, global_batch_size=batch_size)
            if model.losses:
                scaled += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
        gradients = tape.gradient(scaled, model.trainable_variables)
        model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))  # sums over replicas
        return scaled, tf.reduce_sum(metric(clean, output)) / batch_size

    @tf.function
    def train_step(iterator):
        inputs, clean = next(iterator)
        per_replica = strategy.run(replica_step, args=(inputs, clean))
        return [strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None) for value in per_replica]

    callback_list = keras.callbacks.CallbackList(
        list(callbacks), add_history=True, add_progbar=verbose != 0, model=model, verbose=verbose,
        epochs=epochs, steps=steps_per_epoch,
    )
    model.stop_training = False
    callback_list.on_train_begin()
    epoch_logs = None
    for epoch in range(initial_epoch, epochs):
        callback_list.on_epoch_begin(epoch)
        totals, logs = [0.0, 0.0], {}
        for step in range(steps_per_epoch):
            callback_list.on_train_batch_begin(step)
            totals = [total + float(value) for total, value in zip(totals, train_step(iterator))]
            logs = {"loss": totals[0] / (step + 1), metric.__name__: totals[1] / (step + 1)}
            callback_list.on_train_batch_end(step, logs)
            if model.stop_training:
                break
        epoch_logs = dict(logs)
        callback_list.on_epoch_end(epoch, epoch_logs)
        if model.stop_training:
            break
    model.optimizer.finalize_variable_values(model.trainable_weights)
    callback_list.on_train_end(logs=epoch_logs)
    return model.history
