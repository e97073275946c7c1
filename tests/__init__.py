"""The tests of helpers/, in folders named after its subpackages; what several test files share."""

REPORT = ("Heart size is normal. Nodule in the right upper lobe. No left pleural effusion. "
          "Patchy opacity at the left lung base. The lungs are clear.")
POSITIVES = ["Nodule in the right upper lobe.", "Patchy opacity at the left lung base."]
