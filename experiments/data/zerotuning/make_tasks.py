"""Write the `zerotuning` experiment's labelled tasks: `python experiments/data/zerotuning/make_tasks.py`.

Deterministic (one seeded RNG per task): running it again rewrites the same files byte for byte.

    tasks.json        per task: the system instruction, the labels and each label's answer (one token of
                      SmolLM2), or "options" when each item brings its own; an optional answer_prefix
    sentiment.jsonl   320 short reviews, positive / negative (15% say one thing first, then the opposite)
    topic.jsonl       320 one-sentence news-like items, sports / food / music / technology
    facts.jsonl       240 four-option questions on facts a small model can know (capitals, languages, animals,
                      colours, opposites, days, ...), cloze style: only the question is asked, after
                      "The answer is" the options' first tokens are compared (label A-D = which option)

Each line: {"id", "split" ("validation" | "test"), "text", "label"} (+ "options" for facts); the first 100
items of each task are validation, the rest test. Items come from templates and word lists below; every
item is distinct, labels are balanced, and each split holds every label.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).parent
N_VALIDATION = 100  # per task; the rest of the items are test
TASKS = {  # labels: what items use; answers: each label's answer token, or "options" (each item's own options)
    "sentiment": {
        "instruction": "Classify the sentiment of the review. Answer with one word: Positive or Negative.",
        "labels": ["positive", "negative"],
        "answers": {"positive": "Positive", "negative": "Negative"},
    },
    "topic": {
        "instruction": "Classify the topic of the text. Answer with one word: Sports, Food, Music or Technology.",
        "labels": ["sports", "food", "music", "technology"],
        "answers": {"sports": "Sports", "food": "Food", "music": "Music", "technology": "Technology"},
    },
    "facts": {
        "instruction": "Answer the question in a few words.",
        "answer_prefix": "The answer is",
        "labels": ["A", "B", "C", "D"],
        "answers": "options",
    },
}

# ----------------------------------------------------------------------------------------- sentiment

ITEMS = ["movie", "book", "restaurant", "hotel", "phone", "concert", "laptop", "pizza", "video game", "album",
         "coffee shop", "flight", "museum", "bakery", "headphones", "novel", "play", "camera", "gym", "tour"]
POS_ADJ = ["excellent", "wonderful", "delightful", "fantastic", "superb", "charming", "brilliant", "lovely",
           "outstanding", "impressive", "enjoyable", "great", "amazing", "perfect", "beautiful"]
NEG_ADJ = ["terrible", "awful", "dreadful", "disappointing", "boring", "horrible", "poor", "mediocre",
           "annoying", "unpleasant", "bland", "dull", "frustrating", "useless", "ugly"]
POS_EXTRA = ["I would happily go back.", "Highly recommended.", "Worth every penny.", "I can't wait to try it again.",
             "Everyone in my family loved it.", "It made my whole week.", "Five stars from me.",
             "The staff were friendly and helpful.", "It was even better than I hoped.", "I smiled the whole time."]
NEG_EXTRA = ["I would never go back.", "Avoid it.", "A total waste of money.", "I asked for a refund.",
             "Nobody in my family liked it.", "It ruined my whole week.", "One star, and that is generous.",
             "The staff were rude and slow.", "It was even worse than I feared.", "I left angry."]
SENTIMENT_TEMPLATES = [
    "The {item} was {adj}. {extra}",
    "What a {adj} {item}! {extra}",
    "This {item} is truly {adj}. {extra}",
    "I tried the {item} last weekend and it was {adj}. {extra}",
    "Honestly, the {item} felt {adj} from start to finish.",
    "{extra} The {item} was simply {adj}.",
    "My friends said the {item} would be {adj}, and they were right. {extra}",
]
CONTRAST = {  # (template, label): the last judgement decides
    "positive": "At first the {item} seemed {neg}, but in the end it was {pos}. {extra}",
    "negative": "At first the {item} seemed {pos}, but in the end it was {neg}. {extra}",
}


def sentiment(rng: random.Random, n: int) -> list[dict]:
    out, seen = [], set()
    while len(out) < n:
        label = ("positive", "negative")[len(out) % 2]
        adj, extra = (POS_ADJ, POS_EXTRA) if label == "positive" else (NEG_ADJ, NEG_EXTRA)
        item = rng.choice(ITEMS)
        if rng.random() < 0.15:
            text = CONTRAST[label].format(item=item, pos=rng.choice(POS_ADJ), neg=rng.choice(NEG_ADJ), extra=rng.choice(extra))
        else:
            text = rng.choice(SENTIMENT_TEMPLATES).format(item=item, adj=rng.choice(adj), extra=rng.choice(extra))
        if text not in seen:
            seen.add(text)
            out.append({"text": text, "label": label})
    return out


# --------------------------------------------------------------------------------------------- topic

TOPIC = {
    "sports": {
        "templates": ["The {team} beat the {team2} {score} in {event}.", "The {player} scored twice in the second half of the {sport} match.",
                      "The {sport} coach picked a new captain before {event}.", "Fans cheered as the {team} won {event}.",
                      "The {player} broke the {sport} record at {event}.", "An injured {player} will miss the rest of the {sport} season."],
        "team": ["Lions", "Eagles", "Tigers", "Sharks", "Rangers", "Wolves", "Bears", "Falcons"],
        "team2": ["Hawks", "Panthers", "Bulls", "Giants", "Rovers", "Kings"],
        "score": ["2-1", "3-0", "98-91", "24-17", "4-2", "1-0"],
        "event": ["the cup final", "the league opener", "the semi-final", "the championship game", "the Olympic final"],
        "player": ["striker", "goalkeeper", "point guard", "quarterback", "tennis star", "young forward"],
        "sport": ["football", "basketball", "rugby", "hockey", "tennis", "baseball"],
    },
    "food": {
        "templates": ["Add the {ingredient} and simmer the {dish} for {n} minutes.", "The bakery's new {dish} is made with {ingredient}.",
                      "This {dish} recipe needs {ingredient}, salt and a little butter.", "Chefs say fresh {ingredient} makes the best {dish}.",
                      "Serve the {dish} warm with {ingredient} on the side.", "The restaurant added a spicy {dish} with {ingredient} to its menu."],
        "ingredient": ["garlic", "tomatoes", "fresh basil", "chocolate", "lemon juice", "mushrooms", "cheese", "honey", "rice", "ginger"],
        "dish": ["soup", "pasta", "curry", "cake", "bread", "stew", "salad", "pie", "noodles"],
        "n": ["ten", "twenty", "thirty", "five", "fifteen"],
    },
    "music": {
        "templates": ["The {artist} released a new album of {genre} songs.", "The orchestra played a {composer} symphony to a full hall.",
                      "The {artist} sang the hit single live on the radio.", "Tickets for the {genre} festival sold out in an hour.",
                      "The {artist} is recording a {genre} album with a famous {instrument} player.",
                      "She practised the {instrument} every day before the {genre} concert."],
        "artist": ["band", "singer", "rapper", "choir", "pop star", "jazz trio", "guitarist"],
        "genre": ["rock", "jazz", "pop", "folk", "classical", "hip hop", "country"],
        "composer": ["Mozart", "Beethoven", "Bach", "Brahms", "Haydn"],
        "instrument": ["piano", "violin", "guitar", "drum", "cello", "saxophone"],
    },
    "technology": {
        "templates": ["The new {device} ships with a faster {part} and a bigger battery.", "Engineers fixed a bug in the {software} that crashed the {device}.",
                      "The company released an update to its {software} for every {device}.", "Researchers built a {part} that makes the {device} twice as fast.",
                      "The {device} now runs the latest {software} and supports {feature}.", "Hackers found a flaw in the {software} of millions of {device}s."],
        "device": ["smartphone", "laptop", "tablet", "smartwatch", "router", "computer", "robot"],
        "part": ["processor", "chip", "memory card", "camera sensor", "graphics card"],
        "software": ["operating system", "web browser", "app", "firmware", "database software"],
        "feature": ["wireless charging", "face unlock", "5G networks", "voice commands"],
    },
}


def topic(rng: random.Random, n: int) -> list[dict]:
    out, seen, labels = [], set(), list(TOPIC)
    while len(out) < n:
        label = labels[len(out) % len(labels)]
        spec = TOPIC[label]
        template = rng.choice(spec["templates"])
        text = template.format(**{k: rng.choice(v) for k, v in spec.items() if k != "templates"})
        if text not in seen:
            seen.add(text)
            out.append({"text": text, "label": label})
    return out


# --------------------------------------------------------------------------------------------- facts

CAPITALS = {"France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo",
            "China": "Beijing", "Russia": "Moscow", "the United Kingdom": "London", "Egypt": "Cairo", "Greece": "Athens",
            "Portugal": "Lisbon", "Canada": "Ottawa", "Ireland": "Dublin", "Norway": "Oslo", "Sweden": "Stockholm",
            "Austria": "Vienna", "Poland": "Warsaw", "Mexico": "Mexico City", "Argentina": "Buenos Aires",
            "Kenya": "Nairobi", "Thailand": "Bangkok", "South Korea": "Seoul", "the Netherlands": "Amsterdam",
            "Belgium": "Brussels", "Denmark": "Copenhagen", "Finland": "Helsinki", "Hungary": "Budapest",
            "Cuba": "Havana", "Peru": "Lima", "the United States": "Washington", "Switzerland": "Bern",
            "Australia": "Canberra", "India": "New Delhi", "Turkey": "Ankara", "Chile": "Santiago", "Colombia": "Bogota",
            "Iran": "Tehran", "Iceland": "Reykjavik", "Scotland": "Edinburgh", "Ukraine": "Kyiv"}
LANGUAGES = {"France": "French", "Germany": "German", "Spain": "Spanish", "Italy": "Italian", "Japan": "Japanese",
             "China": "Chinese", "Russia": "Russian", "Portugal": "Portuguese", "Greece": "Greek", "Poland": "Polish",
             "Sweden": "Swedish", "Turkey": "Turkish", "the Netherlands": "Dutch", "Brazil": "Portuguese",
             "Mexico": "Spanish", "Austria": "German"}
SOUNDS = {"cow": "moo", "dog": "woof", "cat": "meow", "duck": "quack", "sheep": "baa", "lion": "roar", "pig": "oink",
          "horse": "neigh", "owl": "hoot", "snake": "hiss", "bee": "buzz", "frog": "croak"}
YOUNG = {"dog": "puppy", "cat": "kitten", "cow": "calf", "horse": "foal", "sheep": "lamb", "bear": "cub",
         "frog": "tadpole", "goat": "kid"}
COLOURS = {"the sky on a clear day": "blue", "fresh grass": "green", "snow": "white", "coal": "black",
           "a ripe banana": "yellow", "a ripe tomato": "red", "milk chocolate": "brown", "a carrot": "orange"}
COUNTS = {"legs does a spider have": "eight", "legs does an insect have": "six", "legs does a dog have": "four",
          "legs does a bird have": "two", "days are in a week": "seven", "months are in a year": "twelve",
          "sides does a triangle have": "three", "sides does a square have": "four", "sides does a hexagon have": "six",
          "wheels does a bicycle have": "two", "wheels does a tricycle have": "three", "eyes does a person have": "two",
          "players are on a football team": "eleven", "colours are in a rainbow": "seven"}
NUMBER_WORDS = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]
CONTINENTS = {"Kenya": "Africa", "Egypt": "Africa", "Nigeria": "Africa", "France": "Europe", "Germany": "Europe",
              "Italy": "Europe", "Japan": "Asia", "China": "Asia", "India": "Asia", "Brazil": "South America",
              "Argentina": "South America", "Peru": "South America", "Canada": "North America", "Mexico": "North America",
              "the United States": "North America", "Australia": "Oceania"}
PLURALS = {"mouse": "mice", "child": "children", "foot": "feet", "tooth": "teeth", "man": "men", "woman": "women",
           "goose": "geese", "person": "people", "cat": "cats", "box": "boxes", "baby": "babies", "leaf": "leaves"}
OPPOSITES = {"hot": "cold", "big": "small", "up": "down", "fast": "slow", "happy": "sad", "light": "dark",
             "open": "closed", "early": "late", "full": "empty", "wet": "dry", "hard": "soft", "loud": "quiet",
             "long": "short", "rich": "poor", "strong": "weak", "day": "night", "in": "out", "win": "lose"}
PLANETS = ["Earth", "Mars", "Venus", "Jupiter", "Saturn", "Mercury"]
SCIENCE = [("Which planet do we live on?", "Earth", PLANETS), ("Which planet is called the Red Planet?", "Mars", PLANETS),
           ("Which is the largest planet in the solar system?", "Jupiter", PLANETS),
           ("What do bees make?", "honey", ["milk", "silk", "wool", "honey", "butter"]),
           ("What do plants need from the sun to grow?", "light", ["light", "sand", "noise", "plastic"]),
           ("What does water turn into when it freezes?", "ice", ["ice", "steam", "sand", "glass", "oil"]),
           ("What does water turn into when it boils?", "steam", ["ice", "steam", "rock", "glass"]),
           ("Which is the largest ocean on Earth?", "Pacific", ["Pacific", "Atlantic", "Indian", "Arctic"]),
           ("In which direction does the sun rise?", "east", ["north", "south", "east", "west"]),
           ("What do cows drink?", "water", ["water", "milk", "juice", "coffee"]),
           ("Which animal is known as the king of the jungle?", "lion", ["lion", "mouse", "rabbit", "goat"]),
           ("What is the largest animal on Earth?", "whale", ["whale", "cat", "ant", "horse"]),
           ("Which season comes after winter?", "spring", ["spring", "autumn", "winter", "morning"]),
           ("Which season comes after summer?", "autumn", ["spring", "autumn", "winter", "morning"]),
           ("What do we use to see?", "eyes", ["eyes", "nose", "feet", "knees", "hands"]),
           ("What do we use to hear?", "ears", ["ears", "nose", "feet", "knees", "hands"])]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]


def _questions(rng: random.Random) -> list[tuple[str, str, list[str]]]:
    """(question, answer, distractor pool) for every fact."""
    qs = []
    caps, langs = list(CAPITALS.values()), sorted(set(LANGUAGES.values()))
    for country, capital in CAPITALS.items():
        qs.append((f"What is the capital of {country}?", capital, caps))
    for country, lang in LANGUAGES.items():
        qs.append((f"What language is mainly spoken in {country}?", lang, langs))
    for animal, sound in SOUNDS.items():
        qs.append((f"What sound does a {animal} make?", sound, list(SOUNDS.values())))
        qs.append((f"Which animal says \"{sound}\"?", animal, list(SOUNDS)))
    for animal, young in YOUNG.items():
        qs.append((f"What is a baby {animal} called?", young, list(YOUNG.values())))
    for thing, colour in COLOURS.items():
        qs.append((f"What colour is {thing}?", colour, list(COLOURS.values())))
    for what, n in COUNTS.items():
        qs.append((f"How many {what}?", n, NUMBER_WORDS))
    for country, continent in CONTINENTS.items():
        qs.append((f"On which continent is {country}?", continent, sorted(set(CONTINENTS.values()))))
    for one, many in PLURALS.items():
        qs.append((f"What is the plural of \"{one}\"?", many, list(PLURALS.values())))
    for country, capital in CAPITALS.items():
        qs.append((f"{capital} is the capital of which country?", country.removeprefix("the "),
                   [c.removeprefix("the ") for c in CAPITALS]))
    for a, b in OPPOSITES.items():
        qs.append((f"What is the opposite of \"{a}\"?", b, list(OPPOSITES.values())))
        qs.append((f"What is the opposite of \"{b}\"?", a, list(OPPOSITES)))
    for i, day in enumerate(DAYS):
        qs.append((f"Which day comes after {day}?", DAYS[(i + 1) % 7], DAYS))
    for i, month in enumerate(MONTHS):
        qs.append((f"Which month comes after {month}?", MONTHS[(i + 1) % 12], MONTHS))
    for question, answer, pool in SCIENCE:
        qs.append((question, answer, pool))
    return qs


def facts(rng: random.Random, n: int) -> list[dict]:
    qs = _questions(rng)
    if len(qs) < n:
        raise SystemExit(f"only {len(qs)} fact questions for {n} items")
    out = []
    for i, (question, answer, pool) in enumerate(rng.sample(qs, n)):
        # distractors start with other letters than the answer and each other, so the options' first tokens differ
        wrong = []
        for p in rng.sample(sorted(set(pool)), len(set(pool))):
            if p[0].lower() not in {w[0].lower() for w in [answer, *wrong]} and len(wrong) < 3:
                wrong.append(p)
        assert len(wrong) == 3, question
        slot = i % 4  # balanced answer letters
        options = wrong[:slot] + [answer] + wrong[slot:]
        out.append({"text": question, "options": options, "label": "ABCD"[slot]})
    return out


# ---------------------------------------------------------------------------------------------- main


def main() -> None:
    builders = {"sentiment": (sentiment, 320), "topic": (topic, 320), "facts": (facts, 240)}
    for seed, (name, (build, n)) in enumerate(builders.items()):
        rng = random.Random(seed)
        items = build(rng, n)
        rng.shuffle(items)
        lines = []
        for i, item in enumerate(items):
            split = "validation" if i < N_VALIDATION else "test"
            lines.append(json.dumps({"id": f"{name}-{i:04d}", "split": split, **item}, ensure_ascii=False))
        (HERE / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    (HERE / "tasks.json").write_text(json.dumps(TASKS, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
