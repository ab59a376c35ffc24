"""Training, fine-tuning and COCO evaluation of the zoo's detectors, on one process or under torchrun.

* :mod:`wszoo.training.api`: ``run_train`` / ``run_eval`` (what ``wszoo train`` / ``eval`` run);
* :mod:`wszoo.training.engine`: the loop (MMDetection v2's recipe, exact resume);
* :mod:`wszoo.training.checkpoints`: ``last.pth`` and weights with their model spec;
* :mod:`wszoo.training.data`, :mod:`wszoo.training.evaluate`, :mod:`wszoo.training.finetune`,
  :mod:`wszoo.training.distributed`.
"""
