"""Report texts of the demo dataset, written the way Indiana University chest X-ray reports read.

`helpers.synthetic` draws the pictures; this module writes what a radiologist would dictate about
them. Templated reports (a few phrases, ~80 words in all) let a model map phrases to places without
reading; these reports vary the words for each place ("right base", "right basilar", "posterior
segment of the right lower lobe"...), the sentence shapes, qualifiers and sizes, mix in normal and
sided negated sentences, a non-lesion abnormality, `XXXX` de-identification holes, and reports long
enough that CLIP's 77-token window cuts some describing sentences.

The task stays learnable: a report names its target's kind and place (side + level) in one
describing sentence and says nothing about the other drawn lesions; no sentence negates anything
drawn. Every phrasing list is split into a training pool and a held-out pool (every
`HOLDOUT_EVERY`-th variant, see `pooled`): train and val reports draw from the first, test reports
from the second, so a test score measures reading, not memorising.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ...core.anatomy import SIDES

LEVELS = ("upper", "middle", "lower")
ZONES: list[str] = [f"{side} {level}" for side in SIDES for level in LEVELS]
KINDS = ("nodule", "mass", "opacity", "consolidation", "effusion", "atelectasis")
SPLITS = ("train", "val", "test")
HOLDOUT_EVERY = 4


@dataclass(frozen=True)
class Lesion:
    kind: str
    zone: str  # one of ZONES, in the patient's frame
    role: str  # "target" (masked, described), "distractor" (neither), "finding" (described only)


def pool_of(split: str) -> str:
    """The phrasing pool a report of `split` draws from: "train" (train, val) or "held" (test)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return "held" if split == "test" else "train"


def pooled(options: Sequence[str], pool: str) -> list[str]:
    """The variants of `options` in `pool`: every HOLDOUT_EVERY-th (the 4th, 8th, ...) is held out,
    the last one when the list is shorter; the rest are for training. Lists have 2+ variants."""
    held = {i for i in range(len(options)) if i % HOLDOUT_EVERY == HOLDOUT_EVERY - 1} or {len(options) - 1}
    return [o for i, o in enumerate(options) if (i in held) == (pool == "held")]


# Places, per level ({s}: side), then the zone's own extras. LOCATIONS are prepositional phrases,
# MODIFIERS go before a noun ("right basilar opacity").
_LOCATIONS = {
    "upper": ["in the {s} upper lobe", "at the {s} apex", "in the {s} infraclavicular region",
              "in the {s} apical region", "in the {s} suprahilar region",
              "in the apical segment of the {s} upper lobe", "in the {s} upper lung zone",
              "in the {s} lung, at the apex", "in the {s} upper lung",
              "in the posterior segment of the {s} upper lobe", "at the {s} lung apex",
              "in the upper portion of the {s} lung"],
    "middle": ["in the {s} midlung zone", "in the {s} perihilar region", "in the {s} hilar region",
               "in the {s} mid lung", "in the {s} lung, at the level of the hilum",
               "in the mid portion of the {s} lung", "in the {s} parahilar region",
               "in the {s} perihilar area", "in the {s} midlung field", "adjacent to the {s} hilum",
               "in the central {s} lung", "in the {s} midlung region"],
    "lower": ["in the {s} lower lobe", "at the {s} base", "in the {s} lung base", "at the {s} lung base",
              "in the {s} infrahilar region", "in the posterior segment of the {s} lower lobe",
              "in the {s} costophrenic region", "in the {s} lung, at the base",
              "in the {s} lower lung zone", "in the superior segment of the {s} lower lobe",
              "in the lateral basal segment of the {s} lower lobe", "in the {s} basilar region"],
}
_MODIFIERS = {
    "upper": ["{s} upper lobe", "{s} apical", "{s} upper lung zone", "{s} suprahilar", "{s}-sided apical",
              "{s} infraclavicular", "{s} upper lung", "{s} upper zone"],
    "middle": ["{s} perihilar", "{s} midlung", "{s} hilar", "{s} mid lung", "{s}-sided perihilar",
               "{s} parahilar", "{s} midlung zone", "{s} mid-lung"],
    "lower": ["{s} lower lobe", "{s} base", "{s} lung base", "{s} basilar", "{s}-sided basilar",
              "{s} infrahilar", "{s} lower lung zone", "{s} basal"],
}
_ZONE_LOCATIONS = {"right middle": ["in the right middle lobe", "in the medial segment of the right middle lobe",
                                    "in the lateral segment of the right middle lobe"],
                   "left middle": ["in the lingula", "in the inferior lingula", "in the superior lingula"],
                   "left lower": ["in the left retrocardiac region"]}
_ZONE_MODIFIERS = {"right middle": ["right middle lobe"], "left middle": ["lingular"],
                   "left lower": ["left retrocardiac"]}


def _zone_table(per_level: dict, extras: dict) -> dict[str, list[str]]:
    return {z: [t.format(s=z.split()[0]) for t in per_level[z.split()[1]]] + extras.get(z, []) for z in ZONES}


LOCATIONS = _zone_table(_LOCATIONS, _ZONE_LOCATIONS)
MODIFIERS = _zone_table(_MODIFIERS, _ZONE_MODIFIERS)

# Sentence shapes for every kind but effusion: {a} is "a "/"an " before a countable noun, else "";
# capitalized slots ({A}, {Adj}, {Loc}, {Mod}) start the sentence.
SHAPES = [
    "There is {a}{adj} {noun} {loc}{tail}.", "{Adj} {noun} {loc}{tail}.",
    "{Loc}, there is {a}{adj} {noun}{tail}.", "Noted is {a}{adj} {noun} {loc}{tail}.",
    "{A}{adj} {mod} {noun} is present{tail}.", "{Adj} {mod} {noun}{tail}.",
    "{A}{adj} {noun} is seen {loc}{tail}.", "{A}{adj} {mod} {noun} is again seen{tail}.",
    "There is {a}{adj} {mod} {noun}{tail}.", "Findings include {a}{adj} {noun} {loc}{tail}.",
    "{A}{adj} {noun} is identified {loc}{tail}.", "{A}{adj} {noun} is demonstrated {loc}{tail}.",
    "{Adj} {mod} {noun} is noted{tail}.", "There has been interval development of {a}{adj} {noun} {loc}{tail}.",
    "Again demonstrated is {a}{adj} {mod} {noun}{tail}.", "Frontal and lateral views show {a}{adj} {mod} {noun}{tail}.",
]
EFFUSION_SHAPES = [
    "There is {a}{adj} {sd} pleural effusion{tail}.", "{Adj} {sd} pleural effusion{tail}.",
    "{Adj} pleural effusion on the {s}{tail}.", "Noted is {a}{adj} {sd} effusion{tail}.",
    "{A}{adj} {sd} pleural effusion is present{tail}.", "{Adj} {sd} effusion is again seen{tail}.",
    "Blunting of the {s} costophrenic angle is consistent with {a}{adj} pleural effusion.",
    "Fluid in the {s} pleural space represents {a}{adj} effusion.",
    "There is {a}{adj} layering {sd} pleural effusion{tail}.", "{A}{adj} {sd} pleural effusion is noted{tail}.",
    "The {s} hemithorax shows {a}{adj} pleural effusion{tail}.", "{A}{adj} pleural effusion is seen on the {s}{tail}.",
]
EFFUSION_SIDES = ["{s}", "{s}-sided"]
NOUNS = {"nodule": ["nodule", "pulmonary nodule", "nodular opacity", "nodular density"],
         "mass": ["mass", "soft tissue mass", "mass lesion", "pulmonary mass"],
         "opacity": ["opacity", "airspace opacity", "parenchymal opacity", "pulmonary opacity"],
         "consolidation": ["consolidation", "airspace consolidation", "parenchymal consolidation",
                           "lobar consolidation"],
         "atelectasis": ["atelectasis", "atelectasis or scarring", "atelectatic change", "subsegmental atelectasis"]}
_UNCOUNTABLE = ("consolidation", "atelectasis")
QUALIFIERS = {"nodule": ["small", "well-circumscribed", "rounded", "noncalcified", "solitary", "tiny",
                         "smoothly marginated", "faint"],
              "mass": ["large", "lobulated", "spiculated", "irregular", "ill-defined", "dominant", "bulky",
                       "heterogeneous"],
              "opacity": ["patchy", "hazy", "ill-defined", "faint", "streaky", "ground-glass", "mild",
                          "vague"],
              "consolidation": ["dense", "focal", "patchy", "confluent", "segmental", "mild", "early",
                                "extensive"],
              "atelectasis": ["linear", "platelike", "streaky", "bandlike", "discoid", "mild", "minimal",
                              "curvilinear"],
              "effusion": ["small", "moderate", "trace", "large", "minimal", "small to moderate",
                           "moderate-sized", "tiny"]}
TAILS = {"nodule": ["", " measuring {size}", ", which may represent a granuloma", ", for which CT is recommended",
                    ", with smooth margins", " measuring approximately {size}", ", not clearly calcified",
                    ", which may represent a nipple shadow"],
         "mass": ["", " measuring {size}", ", concerning for malignancy", ", measuring approximately {size}",
                  ", suspicious for neoplasm", ", further evaluation with chest CT is advised",
                  ", with irregular margins", ", which may represent a primary lung neoplasm"],
         "opacity": ["", ", which may represent infection", ", likely infectious or inflammatory",
                     ", possibly scarring", ", more conspicuous on the lateral view", ", which could reflect aspiration",
                     ", which may represent pneumonia", ", of uncertain chronicity"],
         "consolidation": ["", ", concerning for pneumonia", ", with air bronchograms", ", suspicious for infection",
                           ", compatible with pneumonia in the appropriate clinical setting",
                           ", which may represent aspiration", ", most conspicuous on the frontal view", ", which could be infectious"],
         "atelectasis": ["", ", likely postoperative", ", without volume loss", ", which may represent scarring",
                         ", favored to be postinflammatory", ", with mild volume loss", ", likely related to hypoventilation",
                         ", which could be dependent change"],
         "effusion": ["", " with blunting of the {s} costophrenic angle", " obscuring the {s} hemidiaphragm",
                      " layering along the {s} lateral chest wall", " without loculation",
                      " tracking into the {s} major fissure", " with mild fissural extension", " with meniscus formation"]}

# Whole sentences: (topic, kinds whose presence would contradict it, text). One sentence per topic.
_ALL = KINDS
NORMALS = [
    ("heart", (), "Heart size is normal."), ("heart", (), "The heart is normal in size."),
    ("heart", (), "The cardiac silhouette is within normal limits."), ("heart", (), "Normal heart size."),
    ("mediastinum", (), "The mediastinum is unremarkable."), ("mediastinum", (), "Mediastinal contours are normal."),
    ("heart", (), "The cardiomediastinal silhouette is within normal limits."),
    ("mediastinum", (), "Normal mediastinal and hilar contours."),
    ("vessels", (), "Pulmonary vasculature is within normal limits."), ("vessels", (), "No vascular congestion."),
    ("vessels", (), "The pulmonary vascularity is normal."), ("vessels", (), "There is no evidence of pulmonary edema."),
    ("bones", (), "No acute bony abnormality."), ("bones", (), "The osseous structures are intact."),
    ("bones", (), "Visualized osseous structures of the thorax are without acute abnormality."),
    ("bones", (), "No displaced rib fractures are identified."),
    ("pneumothorax", (), "No pneumothorax."), ("pneumothorax", (), "There is no pneumothorax."),
    ("pneumothorax", (), "No evidence of pneumothorax is seen."),
    ("pleura", ("effusion",), "No pleural effusion."), ("pleura", ("effusion",), "No pleural effusions are seen."),
    ("pleura", ("effusion",), "The costophrenic angles are sharp."),
    ("airspace", ("consolidation", "opacity"), "No focal airspace disease."),
    ("airspace", ("consolidation",), "No focal consolidation."),
    ("airspace", ("consolidation", "opacity"), "There is no focal airspace opacity to suggest pneumonia."),
    ("lungs", _ALL, "The lungs are clear."), ("lungs", _ALL, "Lungs are clear bilaterally."),
    ("nodules", ("nodule", "mass"), "No suspicious pulmonary nodules or masses."),
    ("nodules", ("nodule", "mass"), "No focal mass lesion is seen."),
    ("volumes", ("atelectasis",), "The lungs are well expanded."), ("volumes", (), "Normal lung volumes."),
    ("softtissue", (), "The soft tissues are unremarkable."), ("softtissue", (), "Soft tissues are within normal limits."),
    ("trachea", (), "The trachea is midline."), ("aorta", (), "The thoracic aorta is normal in caliber."),
    ("abdomen", (), "Visualized upper abdomen is unremarkable."),
    ("diaphragm", ("effusion",), "The hemidiaphragms are well defined."),
    ("heart", (), "The heart and mediastinum are stable in appearance."),
    ("heart", (), "Cardiac and mediastinal contours are unremarkable."), ("hila", (), "The hila are normal."),
    ("abdomen", (), "No free air under the diaphragm."), ("softtissue", (), "No subcutaneous emphysema."),
    ("volumes", (), "Lung volumes are preserved."), ("vessels", (), "No evidence of interstitial edema."),
    ("bones", (), "There is no acute osseous abnormality."), ("trachea", (), "The trachea is normal in appearance."),
    ("pleura", ("effusion",), "There is no evidence of pleural fluid."),
    ("pneumothorax", (), "No pneumothorax is detected on these radiographs."),
    ("lungs", _ALL, "The lungs are clear without focal infiltrate."),
]
# Sided negations: (kinds the sentence denies on side {s}, text)
SIDED_NEGATIONS = [
    (("effusion",), "No {s} pleural effusion."), (("effusion",), "No {s}-sided pleural effusion is seen."),
    (("effusion",), "The {s} costophrenic angle is sharp."),
    (("consolidation",), "No focal consolidation in the {s} lung."),
    (("opacity", "consolidation"), "No airspace opacity in the {s} lung."), (_ALL, "The {s} lung is clear."),
    (("nodule", "mass"), "No nodule or mass in the {s} lung."), (("atelectasis",), "No {s}-sided atelectasis."),
]
# The sentences of an enlarged heart: drawn and masked in the union setting only (see `generate`).
CARDIOMEGALY = ("Mild cardiomegaly.", "The heart is mildly enlarged.")
# Abnormal but none of the six lesion kinds, never drawn or masked (but for CARDIOMEGALY in the
# union setting): (topic, text)
EXTRAS = [
    ("heart", CARDIOMEGALY[0]), ("heart", CARDIOMEGALY[1]), ("aorta", "Tortuous aorta."),
    ("aorta", "Atherosclerotic calcification of the aortic arch."), ("abdomen", "Postsurgical clips in the upper abdomen."),
    ("abdomen", "Cholecystectomy clips are noted."), ("volumes", "Mild hyperinflation."),
    ("volumes", "The lungs are hyperexpanded, consistent with emphysema."), ("bones", "Healed right rib fracture."),
    ("bones", "Old healed left rib fractures."), ("spine", "Degenerative changes of the thoracic spine."),
    ("spine", "Mild thoracic scoliosis."), ("sternotomy", "Median sternotomy wires are intact."),
    ("device", "A dual-lead pacemaker is in place with leads in the right atrium and ventricle."),
    ("device", "A central venous catheter terminates in the superior vena cava."),
    ("softtissue", "Surgical clips in the left axilla."), ("mediastinum", "Small hiatal hernia."),
    ("heart", "Dense calcification of the mitral annulus."), ("spine", "Exaggerated thoracic kyphosis."),
    ("volumes", "Flattened diaphragms consistent with chronic obstructive pulmonary disease."),
    ("spine", "Anterior cervical fusion hardware is partially visualized."),
]
XXXX_SENTENCES = [
    ("bones", (), "The XXXX are intact."), ("spine", (), "Degenerative changes of the XXXX spine."),
    ("sternotomy", (), "XXXX sternotomy wires are unchanged."), ("airspace", ("opacity", "consolidation"), "No XXXX opacities."),
    ("heart", (), "Heart size is XXXX."), ("device", (), "XXXX catheter tip in the superior vena cava."),
    ("mediastinum", (), "Calcified XXXX lymph nodes."),
]
COMPARISONS = ["Comparison is made to the prior study.", "PA and lateral views of the chest were obtained.",
               "There has been no significant interval change elsewhere.", "Cardiopulmonary findings are otherwise stable."]
_NORMAL_IMPRESSIONS = ["No acute cardiopulmonary disease.", "No acute cardiopulmonary abnormality.", "Normal chest.",
                       "No active disease."]
_INDICATIONS = ["Cough.", "Chest pain.", "Shortness of breath.", "Fever and cough.", "Preoperative.",
                "Dyspnea.", "Follow-up."]


def estimate_clip_tokens(text: str) -> int:
    """A lower bound of CLIP's token count: words + punctuation marks + start/end tokens."""
    return len(re.findall(r"[A-Za-z0-9]+", text)) + len(re.findall(r"[^\w\s]", text)) + 2


def _pick(options: Sequence, pool: str, rng: np.random.Generator):
    choices = pooled(options, pool)
    return choices[int(rng.integers(len(choices)))]


def _measure(kind: str, rng: np.random.Generator) -> str:
    cm = rng.uniform(3.0, 6.0) if kind == "mass" else rng.uniform(0.6, 2.0)
    return f"{round(cm * 10)} mm" if cm < 1.0 else f"{cm:.1f} cm"


def finding_sentence(lesion: Lesion, split: str, rng: np.random.Generator) -> str:
    """One sentence describing `lesion` (kind, side, level) in phrasings of `split`'s pool."""
    pool, side = pool_of(split), lesion.zone.split()[0]
    kind = lesion.kind
    adj = _pick(QUALIFIERS[kind], pool, rng)
    tail = _pick(TAILS[kind], pool, rng).format(s=side, size=_measure(kind, rng))
    if kind == "effusion":
        shape, noun = _pick(EFFUSION_SHAPES, pool, rng), "effusion"
        sd = _pick(EFFUSION_SIDES, pool, rng).format(s=side)
        loc = mod = ""
    else:
        shape, noun, sd = _pick(SHAPES, pool, rng), _pick(NOUNS[kind], pool, rng), ""
        loc, mod = _pick(LOCATIONS[lesion.zone], pool, rng), _pick(MODIFIERS[lesion.zone], pool, rng)
    text = shape.format(a="\0", A="\0", adj=adj, Adj=adj, noun=noun, loc=loc, Loc=loc, mod=mod, Mod=mod,
                        sd=sd, s=side, tail=tail)
    countable = kind not in _UNCOUNTABLE
    text = re.sub("\0(.)", lambda m: ("an " if m.group(1) in "aeiou" else "a ") * countable + m.group(1), text)
    return text[0].upper() + text[1:]


def _allowed(kinds_denied: Sequence[str], side: str | None, drawn: Sequence[Lesion]) -> bool:
    """True unless the sentence denies a drawn lesion (on `side`, or anywhere when side is None)."""
    return not any(l.kind in kinds_denied and (side is None or l.zone.startswith(side)) for l in drawn)


def _impression(lesion: Lesion | None, split: str, rng: np.random.Generator) -> str:
    if lesion is None:
        return str(rng.choice(_NORMAL_IMPRESSIONS))
    side, pool = lesion.zone.split()[0], pool_of(split)
    if lesion.kind == "effusion":
        return f"{_pick(EFFUSION_SIDES, pool, rng).format(s=side).capitalize()} pleural effusion."
    return f"{_pick(MODIFIERS[lesion.zone], pool, rng).capitalize()} {lesion.kind}."


def _mesh(lesion: Lesion | None) -> str:
    if lesion is None:
        return "normal"
    side, level = lesion.zone.split()
    if lesion.kind == "effusion":
        return f"Pleural Effusion/{side}"
    return f"{lesion.kind.capitalize()}/lung, {level} lobe/{side}"


def report(uid: int, described: Lesion | None, drawn: Sequence[Lesion], split: str, rng: np.random.Generator,
           quirks: bool, heart: str | None = None) -> tuple[dict, str]:
    """One row of indiana_reports.csv and its describing sentence ("" without `described`).

    `described` is the only lesion the text mentions; no sentence denies a lesion in `drawn`.
    `heart` (a sentence of `CARDIOMEGALY`, union setting) takes the place of the random non-lesion
    abnormality."""
    long = rng.random() < 0.22  # long enough that CLIP's 77 tokens may cut the describing sentence
    sentences, taken = [], set()
    if heart is not None:
        sentences.append(heart)
        taken.add("heart")
    elif rng.random() < 0.5:  # a non-lesion abnormality
        topic, text = EXTRAS[int(rng.integers(len(EXTRAS)))]
        sentences.append(text)
        taken.add(topic)
    holes = [(t, s) for t, k, s in XXXX_SENTENCES if t not in taken and _allowed(k, None, drawn)]
    if quirks and rng.random() < 0.25:
        topic, text = holes[int(rng.integers(len(holes)))]
        sentences.append(text)
        taken.add(topic)
    denied: set[str] = set()  # kinds an unsided sentence already denies
    n_normals = int(rng.integers(8, 12)) if long else int(rng.integers(1, 4))
    for i in rng.permutation(len(NORMALS)):
        topic, kinds, text = NORMALS[i]
        if topic not in taken and _allowed(kinds, None, drawn) and n_normals > 0:
            taken.add(topic)
            sentences.append(text)
            denied.update(kinds)
            n_normals -= 1
    n_negations = int(rng.integers(2, 4)) if long else int(rng.integers(0, 2))
    for i in rng.permutation(len(SIDED_NEGATIONS))[:n_negations]:
        kinds, text = SIDED_NEGATIONS[i]
        side = SIDES[int(rng.integers(2))]
        if _allowed(kinds, side, drawn) and not set(kinds) <= denied:
            sentences.append(text.format(s=side))
    if long:
        sentences.append(COMPARISONS[int(rng.integers(len(COMPARISONS)))])
    sentences = [sentences[i] for i in rng.permutation(len(sentences))]
    describing = finding_sentence(described, split, rng) if described is not None else ""
    if described is not None:
        at_end = long and rng.random() < 0.5
        sentences.insert(len(sentences) if at_end else int(rng.integers(len(sentences) + 1)), describing)
    indication = str(rng.choice(_INDICATIONS))
    if quirks and rng.random() < 0.1:
        indication = f"XXXX-year-old with {indication.lower()}"
    row = {"uid": uid, "MeSH": _mesh(described), "Problems": described.kind.capitalize() if described else "normal",
           "image": "Xray Chest PA and Lateral", "indication": indication, "comparison": "None.",
           "findings": " ".join(sentences), "impression": _impression(described, split, rng)}
    return row, describing
