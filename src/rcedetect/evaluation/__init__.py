"""What runs on a trained model and its attacks, and the numbers it gives: attack runs on disk, one part file
per batch (:mod:`.attack_store`); every detector scored on an attack, the records (:mod:`.scoring`); an
``rce attack`` folder scored on another run (:mod:`.transfer`); adversarial images exported and read back
(:mod:`.adv_export`); the command line's calibrated detector of a run (:mod:`.calibrated`); which attacks feed
which table of the paper, and the paper's numbers (:mod:`.paper_ref`); any detector evaluated adaptively in one call,
a detector card (:mod:`.detector_card` over :mod:`.detector_inputs`, :mod:`.user_detector`, :mod:`.detector_suite`,
:mod:`.detector_runs`, :mod:`.detector_sanity` and :mod:`.card`); an attack against a calibrated threshold in part
files, the one path of the card, ``rce adaptive`` and ``rce reproduce`` (:func:`.detector_runs.attack_parts`).

Layer: above :mod:`rcedetect.attacks`; imports ``core``, ``stats``, ``data``, ``models``, ``detectors`` and
``attacks``, never the training, the reproduce pipeline, the report, the server or the commands.
"""
