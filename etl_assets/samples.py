"""Realistic sample files for the sample client's flows (``etl-assets demo-data``).

Italian-style companies with accents, quoted ``;`` and line breaks, parents in the same
file and in earlier ones, and a few faulty rows so the catcher has something to catch.
"""

from __future__ import annotations

import csv
import io
import random
from datetime import date, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

COMPANY_COLUMNS = [
    "COMPANY_ID",
    "VAT_CODE",
    "NAME",
    "ADDRESS",
    "CITY",
    "ZIP",
    "COUNTRY",
    "EMAIL",
    "PHONE",
    "PARENT_VAT",
    "REVENUE",
    "EMPLOYEES",
    "FOUNDED",
    "UPDATED_AT",
]
PREFIXES = ["Società", "Officine", "Caffè", "Ditta", "Laboratorio", "Cantina", "Pasticceria", "Tessitura"]
SURNAMES = [
    "Rossi",
    "Bianchi",
    "Esposito",
    "Romano",
    "Colombo",
    "Ricci",
    "Marino",
    "Greco",
    "Bruno",
    "Gallo",
    "Conti",
    "De Luca",
    "Mancini",
    "Costa",
    "Giordano",
    "Rizzo",
    "Lombardi",
    "Moretti",
    "Fabbri",
    "Niccolò",
]
SUFFIXES = ["S.p.A.", "S.r.l.", "& Figli S.n.c.", "S.a.s.", "Società Cooperativa"]
CITIES = [
    ("Milano", "20121"),
    ("Torino", "10121"),
    ("Forlì", "47121"),
    ("Cantù", "22063"),
    ("Napoli", "80121"),
    ("Bologna", "40121"),
    ("Sant'Agata", "53030"),
    ("Città di Castello", "06012"),
]
STREETS = [
    "Via Roma",
    "Corso Vittorio Emanuele II",
    "Piazza Garibaldi",
    "Viale dell'Università",
    "Via Niccolò Machiavelli",
]


def _money(value: float) -> str:
    whole, cents = f"{value:.2f}".split(".")
    groups = []
    while whole:
        groups.insert(0, whole[-3:])
        whole = whole[:-3]
    return ".".join(groups) + "," + cents


def company_rows(day: date, count: int, rng: random.Random, known_vats: list[str]) -> list[list[str]]:
    """``count`` good rows for one day; some reference parents known from earlier days."""
    rows = []
    for i in range(count):
        number = int(day.strftime("%j")) * 1000 + i
        vat = f"IT{number:011d}"
        prefix, surname, suffix = rng.choice(PREFIXES), rng.choice(SURNAMES), rng.choice(SUFFIXES)
        name = f"{prefix} {surname} {suffix}"
        if i % 7 == 3:
            name = f'{surname}; "{prefix}" {suffix}'  # a quoted ; and quotes inside the field
        city, zip_code = rng.choice(CITIES)
        address = f"{rng.choice(STREETS)}, {rng.randint(1, 200)}"
        if i % 9 == 4:
            address += f"\nScala {rng.choice('ABC')}, interno {rng.randint(1, 30)}"  # a line break
        parent = ""
        if rows and i % 5 == 0:
            parent = rows[rng.randrange(len(rows))][1]  # parent in the same file
        elif known_vats and i % 5 == 1:
            parent = rng.choice(known_vats)  # parent from an earlier day
        founded = date(1950, 1, 1) + timedelta(days=rng.randint(0, 25000))
        updated = datetime.combine(day, datetime.min.time()) - timedelta(minutes=rng.randint(30, 600))
        rows.append(
            [
                f"C{number:07d}",
                vat,
                name,
                address,
                city,
                zip_code,
                "IT",
                f"info@{surname.lower().replace(' ', '')}{i}.it",
                f"+39 02 {rng.randint(1000000, 9999999)}",
                parent,
                _money(rng.uniform(1e4, 5e7)),
                str(rng.randint(1, 2500)),
                founded.strftime("%d/%m/%Y"),
                updated.strftime("%d/%m/%Y %H:%M:%S"),
            ]
        )
    return rows


def add_faults(rows: list[list[str]], rng: random.Random) -> None:
    """A handful of faulty rows of every kind the catcher knows."""
    if len(rows) < 10:
        return
    rows[2][12] = "31/02/2019"  # FOUNDED: no such date
    rows[4][7] = "ufficio.at.example.it"  # EMAIL: not an address
    rows[6][1] = ""  # VAT_CODE: required
    rows[8][10] = "12.5OO,00"  # REVENUE: letter O for zero
    rows[9][9] = "IT99999999999"  # PARENT_VAT: unknown -> link rejects
    conflict = list(rows[5])  # same key, older UPDATED_AT -> rejected
    conflict[2] += " (old)"
    conflict[13] = "01/01/2020 08:00:00"
    rows.append(conflict)
    rows.append(list(rows[1]))  # exact duplicate -> collapsed
    rng.shuffle(rows)


def companies_file(rows: list[list[str]], bom: bool) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=";", lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(COMPANY_COLUMNS)
    writer.writerows(rows)
    return (b"\xef\xbb\xbf" if bom else b"") + buffer.getvalue().encode("utf-8")


OFFER_COLUMNS = [
    "OFFER_ID",
    "COMPANY_VAT",
    "TITLE",
    "AMOUNT",
    "CURRENCY",
    "STATUS",
    "VALID_UNTIL",
    "CREATED_AT",
]
TITLES = ["Fornitura caffè", "Manutenzione impianti", "Consulenza qualità", "Noleggio macchine", "Formazione"]


def offers_file(day: date, hhmm: str, vats: list[str], rng: random.Random, count: int = 6) -> bytes:
    """One 5-minute offers file; one offer names a company that has not arrived (parked)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=";", lineterminator="\r\n")
    writer.writerow(OFFER_COLUMNS)
    created = datetime.combine(day, datetime.min.time()).replace(hour=int(hhmm[:2]), minute=int(hhmm[2:]))
    for i in range(count):
        vat = rng.choice(vats) if i else "IT77777777777"
        writer.writerow(
            [
                f"O{day:%Y%m%d}{hhmm}{i:02d}",
                vat,
                rng.choice(TITLES),
                _money(rng.uniform(100, 90_000)),
                "EUR",
                rng.choice(["OPEN", "SENT", "WON", "LOST"]),
                (day + timedelta(days=60)).strftime("%d/%m/%Y"),
                (created - timedelta(minutes=rng.randint(0, 4))).strftime("%d/%m/%Y %H:%M:%S"),
            ]
        )
    return buffer.getvalue().encode("utf-8")


def write_demo_data(
    target: Path, days: int = 3, end: date | None = None, rows_per_day: int = 40, seed: int = 20250101
) -> list[Path]:
    """Companies files for ``days`` days up to ``end`` (today) in ``target``."""
    rng = random.Random(seed)
    end = end or date.today()
    target.mkdir(parents=True, exist_ok=True)
    written, known = [], []
    for offset in range(days - 1, -1, -1):
        day = end - timedelta(days=offset)
        rows = company_rows(day, rows_per_day, rng, known)
        known += [r[1] for r in rows]
        add_faults(rows, rng)
        path = target / f"companies_{day:%Y%m%d}.csv"
        path.write_bytes(companies_file(rows, bom=offset % 2 == 0))
        written.append(path)
    # offers of the day before the last: its companies are there, so most offers link
    offers_day = end - timedelta(days=1)
    for hhmm in ("0900", "0905", "1000"):
        path = target / f"offers_{offers_day:%Y%m%d}_{hhmm}.csv"
        path.write_bytes(offers_file(offers_day, hhmm, known, rng))
        written.append(path)
    return written


FIRST_NAMES = [
    "Giulia",
    "Marco",
    "Francesca",
    "Luca",
    "Chiara",
    "Matteo",
    "Sofia",
    "Andrea",
    "Elena",
    "Niccolò",
]
LAST_NAMES = [
    "Rossi",
    "Bianchi",
    "Ferrari",
    "Esposito",
    "Romano",
    "Colombo",
    "Ricci",
    "Marino",
    "De Luca",
    "Gallo",
]


def crm_contacts_table(metadata: sa.MetaData) -> sa.Table:
    """The CRM's ``contacts`` table, as the sample client keeps it."""
    return sa.Table(
        "contacts",
        metadata,
        sa.Column("contact_id", sa.String(40), primary_key=True),
        sa.Column("account_vat", sa.String(20)),
        sa.Column("first_name", sa.String(80)),
        sa.Column("last_name", sa.String(80)),
        sa.Column("email", sa.String(200)),
        sa.Column("phone", sa.String(40)),
        sa.Column("updated_at", sa.DateTime, nullable=False, index=True),
    )


def crm_contact_rows(
    days: int, end: date, rows_per_day: int, rng: random.Random, vats: list[str]
) -> list[dict[str, object]]:
    """Contacts created over ``days`` days up to ``end``, a few changed again a day later."""
    rows: list[dict[str, object]] = []
    for offset in range(days - 1, -1, -1):
        day = end - timedelta(days=offset)
        for i in range(rows_per_day):
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            rows.append(
                {
                    "contact_id": f"C{day:%Y%m%d}{i:04d}",
                    "account_vat": rng.choice(vats) if vats else None,
                    "first_name": first.lower() if i % 7 == 0 else first,
                    "last_name": last,
                    "email": f"{first}.{last}@example.it".lower().replace(" ", "")
                    if i % 11
                    else "not-an-email",
                    "phone": f"+39 0{rng.randint(2, 9)} {rng.randint(1000000, 9999999)}",
                    "updated_at": datetime(day.year, day.month, day.day, 8) + timedelta(seconds=37 * i),
                }
            )
    return rows


def write_crm_demo_data(
    engine: sa.Engine, days: int = 3, end: date | None = None, rows_per_day: int = 20, seed: int = 20250101
) -> int:
    """The CRM's ``contacts`` table created and filled anew (the dev SQLite file); its row count."""
    rng = random.Random(seed)
    vats = [f"IT{rng.randint(10**10, 10**11 - 1)}" for _ in range(10)]
    metadata = sa.MetaData()
    table = crm_contacts_table(metadata)
    rows = crm_contact_rows(days, end or date.today(), rows_per_day, rng, vats)
    with engine.begin() as conn:
        metadata.drop_all(conn)
        metadata.create_all(conn)
        conn.execute(sa.insert(table), rows)
    return len(rows)
