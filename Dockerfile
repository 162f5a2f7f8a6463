# mailappliance: the appliance only, for docker-compose.yml's MongoDB. Not in the image:
# the embedded database (SecantusDB, GPL-2.0), tests, benchmarks, scripts, keys (.dockerignore).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# Let the non-root user's python bind ports 25, 465, 587, 24, 143 and 993 (a file
# capability; NET_BIND_SERVICE is in Docker's default set, and compose keeps it).
RUN apt-get update && apt-get install -y --no-install-recommends libcap2-bin \
    && setcap 'cap_net_bind_service=+ep' "$(readlink -f /usr/local/bin/python3)" \
    && apt-get purge -y libcap2-bin && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir --disable-pip-version-check -r requirements.txt
COPY mailappliance ./mailappliance
COPY config ./config

RUN useradd --system --uid 10025 --user-group --home-dir /var/lib/mailappliance --create-home \
        --shell /usr/sbin/nologin mailappliance
USER mailappliance

# Standard ports inside the container. Each uses the setting's lowest-priority name
# (settings.py: SMTP_25_PORT wins over SMTP_PORT, LMTP_24_PORT over LMTP_PORT,
# IMAP_143_PORT over IMAP_PORT, IMAP_993_PORT over IMAP_SSL_PORT), so either name
# in .env overrides these.
ENV DATA_DIR=/var/lib/mailappliance \
    SMTP_PORT=25 \
    SMTP_587_PORT=587 \
    SMTP_465_PORT=465 \
    LMTP_PORT=24 \
    IMAP_PORT=143 \
    IMAP_SSL_PORT=993 \
    API_PORT=3000 \
    MAILBOX_API_PORT=8080
EXPOSE 25 465 587 24 143 993 3000 8080
VOLUME ["/var/lib/mailappliance"]

# /health of the port the appliance wrote to DATA_DIR/ports.json (API, else Mailbox API).
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "-m", "mailappliance.healthcheck"]

# SIGTERM: stop accepting, finish transactions (SHUTDOWN_TIMEOUT), drain, exit.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "mailappliance"]
