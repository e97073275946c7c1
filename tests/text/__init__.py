"""What the tests of helpers/text/ share."""

DIM = 32
REPORT = ("The heart size is normal. The lungs are clear. There is a small right pleural effusion "
          "and a calcified granuloma in the left upper lobe. No pneumothorax. No acute bony "
          "abnormality.")
