"""Chapter experiments: plans, sweeps, cached runs, summaries and verdicts built on the concept modules.

The concept modules (:mod:`cfct.similarity`, :mod:`cfct.shortcuts`, :mod:`cfct.spectral`,
:mod:`cfct.transferability`, :mod:`cfct.stats`) hold reusable primitives (arrays in, numbers out). Each chapter's
orchestration lives here: :mod:`.transfer` (the fine-tuning matrix of 3.5.1), :mod:`.ch3` ... :mod:`.ch6`,
:mod:`.robustness` (the p_art sweep shared by Chapters 4 and 5) and :mod:`.jobs` (the unit a sweep is made of).
"""
