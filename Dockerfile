# One image for every role (scheduler, worker, webserver, etlctl).
# Build stage: the Swift toolchain and the C libraries' headers.
ARG SWIFT_VERSION=6.3
FROM swift:${SWIFT_VERSION}-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq-dev libhiredis-dev libicu-dev zlib1g-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so that a source change does not fetch them again.
COPY Package.swift ./
RUN swift package resolve
COPY Sources Sources
COPY Tests Tests
COPY bench/ClientBench bench/ClientBench
# The Swift runtime is linked statically: the runtime image needs only the C libraries.
RUN for p in scheduler worker webserver etlctl; do swift build -c release --static-swift-stdlib --product "$p"; done \
 && mkdir /out && for p in scheduler worker webserver etlctl; do cp "$(swift build -c release --show-bin-path)/$p" /out/; done

# Runtime stage: slim Debian with libpq, hiredis, ICU, zlib, the uap-core rules, tor-geoipdb and iso-codes.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq5 libhiredis0.14 libicu72 zlib1g libstdc++6 uap-core tor-geoipdb iso-codes ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 etl \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /app etl
WORKDIR /app
COPY --from=build /out/ /usr/local/bin/
COPY --chown=etl sources /app/sources
RUN mkdir -p /app/reports /app/apache-logs && chown etl /app/reports /app/apache-logs
USER etl
CMD ["worker"]
