"""What a reader takes away from a segmented CT: the HTML report, overlay images and DICOM-SEG.

Imported only when a report or a DICOM-SEG is asked for: PIL and highdicom load here, never on
the plain inference path.
"""
