"""Your own code: transformers, estimators, helpers (docs/your-code.md).

Name a class here by ``_target_`` in a feature step (conf/featurize/) or a
model file (conf/model/), e.g. ``_target_: user.features.LogAmount``. The
package stage ships this package's modules your model uses, and pins the
libraries they import, in the Bento. `copier update` never touches this folder.
"""
