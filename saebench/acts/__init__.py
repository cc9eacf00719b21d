"""saebench.acts: activations from vision backbones.

- :mod:`saebench.acts.backbones`: the backbone registry (hooks, token layouts, preprocessing, weights);
- :mod:`saebench.acts.tokens`: token selection (CLS, registers, patches, all, mean), patch-grid resizing;
- :mod:`saebench.acts.sources`: image sources (ImageFolder, webdataset, Fashion-MNIST, scikit-image photos).
"""
