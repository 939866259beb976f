"""Stage 2 of Scenimefy: StyleGAN pseudo pairs kept by segmentation-guided selection (docs/reference.md §3.3-3.6).

`candidates.py` renders a batch of candidates and segments both images in one jitted program,
`selection.py` holds the official selection math and rules, `job.py` the resumable job
(`configs/pseudo_pairs.py`), `report.py` its summary and pictures, `demo.py` random stand-in networks.
"""
