"""The foundation every other part stands on: the errors (:mod:`.errors`), atomic pickle-free files and config
hashes (:mod:`.io`), the checks of images, labels and features (:mod:`.validation`), the fields of every JSON file
read back (:mod:`.schemas`), the processes of a multi-GPU run (:mod:`.distributed`) and the device a command runs
on (:mod:`.device`).

Layer: the lowest; imports no other part of rcedetect.
"""
