"""saebench.acts: activations from vision backbones, from images to training batches.

- :mod:`saebench.acts.backbones`: the backbone registry (hooks, token layouts, preprocessing, weights);
- :mod:`saebench.acts.tokens`: token selection (CLS, registers, patches, all, mean), patch-grid resizing;
- :mod:`saebench.acts.sources`: image sources (ImageFolder, webdataset, Fashion-MNIST, scikit-image photos);
- :mod:`saebench.acts.store`: the content-hashed, sharded, checksummed store (``docs/cache-format.md``) and
  aligned multi-model store groups;
- :mod:`saebench.acts.cache`: the resumable, torchrun-distributed cache runner (``saebench cache``);
- :mod:`saebench.acts.loaders`: shuffled, ordered, by-image and aligned multi-model loaders;
- :mod:`saebench.acts.normalization`: streaming standardisation statistics saved beside a store;
- :mod:`saebench.acts.cli`: the ``saebench cache`` verb.
"""
