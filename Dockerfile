# mailappliance: the appliance only. It talks to the MongoDB of docker-compose.yml;
# the embedded database (SecantusDB, GPL-2.0) is deliberately not installed here.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DATA_DIR=/var/lib/mailappliance

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY mailappliance ./mailappliance
COPY config ./config

# Let the non-root user bind ports 25, 465, 587, 24, 143 and 993.
RUN apt-get update && apt-get install -y --no-install-recommends libcap2-bin \
    && setcap 'cap_net_bind_service=+ep' "$(readlink -f "$(command -v python3)")" \
    && apt-get purge -y libcap2-bin && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*
RUN useradd --system --home-dir /var/lib/mailappliance --create-home mail-appliance
USER mail-appliance

# Standard ports inside the container; see docker-compose.yml.
ENV SMTP_25_PORT=25 SMTP_587_PORT=587 SMTP_465_PORT=465 LMTP_24_PORT=24 \
    IMAP_143_PORT=143 IMAP_993_PORT=993 API_PORT=3000 MAILBOX_API_PORT=8080
EXPOSE 25 465 587 24 143 993 3000 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD python -c "import os,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('API_PORT','3000'), timeout=4)" || exit 1

CMD ["python", "-m", "mailappliance"]
