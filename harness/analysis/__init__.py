"""Building block: the measurements as plain functions of modules, tensors and batches — the
Hessian operator and its solvers (`hessian`, `hessian_parallel`), loss landscapes (`landscape`,
`directions`), the measured objective (`objective`), feature-map analyses (`features`), metrics,
the training loop and evaluation under perturbations (`perturb`). Imports no engine: each works
from a notebook."""
