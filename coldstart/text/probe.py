"""What new users write, to check a distilled student on text unlike the catalogue's templates.

A student is distilled on the catalogue's own texts (item and profile templates) and measured on held-out
ones, yet a new user's profile text is free text: a student at 0.93 on held-out catalogue texts reached
0.78 on free text like these (benchmarks/HISTORY.md, "The distilled student on free text"). Serving takes
the student only where it holds on both (`trainers.stages.encoder_models`). None of these is in the
training texts; they are not about any one catalogue.
"""

from __future__ import annotations

import numpy as np

PROBE_TEXTS = (
    "Mostly horror films for me, that is what I watch on weekends.",
    "I love science fiction and anything with space travel.",
    "big fan of old westerns",
    "My kids and I watch animated movies together every Sunday.",
    "I'm into slow, thoughtful dramas with great acting.",
    "Comedies, please. I need to laugh after work.",
    "Documentaries about nature and history are my thing.",
    "I like thrillers that keep me guessing until the end.",
    "Romantic films, especially the classic black and white ones.",
    "Give me action, explosions and car chases.",
    "I read a lot of crime novels and like detective stories.",
    "war movies based on true events",
    "Musicals! I know all the songs from the old ones.",
    "I usually pick whatever won awards that year.",
    "Something light and funny, nothing too violent.",
    "I'm a retired teacher who enjoys mysteries and period pieces.",
    "Student, 21, I watch a lot of indie films and anything weird.",
    "Fantasy with dragons and magic, the longer the better.",
    "I enjoy films about music and musicians.",
    "Not into superhero stuff. I prefer character stories.",
    "Foreign films with subtitles are fine by me, I like French cinema.",
    "Scary but not gory. Ghost stories are perfect.",
    "I watch with my wife, she likes romance and I like action.",
    "Anything by the great directors of the seventies.",
    "Cheap running shoes that last, I run about thirty miles a week.",
    "I cook every day and want good knives and cast iron pans.",
    "Looking for board games the whole family can play.",
    "jazz, blues and a bit of soul",
    "I like podcasts about science and technology.",
    "Books about space exploration and astronomy for beginners.",
    "Gifts for a ten year old who loves dinosaurs.",
    "Outdoor gear for camping in the mountains.",
    "I prefer short videos, cooking tips and home repair.",
    "Video games with a good story, mostly role-playing games.",
    "Eco-friendly cleaning products without strong smells.",
    "I'm learning to paint; watercolour supplies and tutorials.",
    "What are people like me watching right now?",
    "surprise me",
    "I liked the first two films in the series but not the third one.",
    "Heartwarming stories about animals and friendship.",
)


def probe_cosine(teacher: np.ndarray, student: np.ndarray) -> float:
    """Mean cosine, row by row, of the student's vectors of `PROBE_TEXTS` to the teacher's."""
    a, b = np.asarray(teacher, np.float64), np.asarray(student, np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return float((a * b).sum(axis=1).mean())
