# Penguin Classification API — the image Cloud Run runs.
#
# Two stages: `builder` installs the locked dependencies into a venv; the final stage
# copies that venv next to the code and model, so it carries no pip cache and no build
# tools. Layers go from least to most often changed (dependencies, model, config, code),
# so editing code under penguin_api/ rebuilds only the last two layers.
#
#   docker build -t penguin-api .                # or: make docker-build
#   docker run -p 8080:8080 penguin-api          # or: make docker-run

# A slim Debian Python; overridable to build from a mirror or a local copy of the base.
ARG BASE_IMAGE=python:3.11-slim

# --- builder: the dependency venv ---------------------------------------------------
FROM ${BASE_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# Only the lock and the project metadata reach this stage, so the layer below is
# reused until one of them changes.
WORKDIR /build
COPY requirements.lock pyproject.toml ./

# --require-hashes refuses anything not byte-for-byte in the lock; --only-binary keeps
# compilers out of the picture (every runtime dependency ships a manylinux wheel).
# Then drop what serving never loads, about 70 MB: pip and setuptools; the packages'
# test suites and type stubs; onnxruntime's model-conversion tools and its C-API library
# (the Python binding has the runtime linked in); NumPy's build tools (f2py, distutils);
# Pillow's font rendering and Tk bridge (its AVIF codec stays: AVIF is an accepted format).
# The imports at the end fail the build if a future release needs something removed, or
# if Pillow lost AVIF (the service would then quietly refuse AVIF uploads). The lock also
# holds the gcs extra (google-cloud-storage): Cloud Run Jobs run this image as
# `penguin-api predict gs://...` (docs/batch.md); serving never imports it.
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --no-deps --require-hashes --only-binary=:all: \
        -r requirements.lock \
 && /opt/venv/bin/pip uninstall --yes pip setuptools \
 && site=$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))') \
 && find "$site" -depth -type d -name tests -exec rm -rf {} + \
 && find "$site" -name '*.pyi' -delete \
 && rm -rf "$site"/onnxruntime/transformers "$site"/onnxruntime/quantization \
           "$site"/onnxruntime/tools "$site"/onnxruntime/capi/libonnxruntime.so.* \
           /opt/venv/bin/onnxruntime_test \
           "$site"/numpy/f2py "$site"/numpy/distutils /opt/venv/bin/f2py \
           "$site"/PIL/_imagingft.* "$site"/pillow.libs/libfreetype-* \
           "$site"/pillow.libs/libharfbuzz-* "$site"/pillow.libs/libbrotli* \
           "$site"/PIL/_imagingtk.* \
 && /opt/venv/bin/python -c "import onnxruntime, numpy, flask, gunicorn, prometheus_client; \
import pillow_heif; from PIL import Image, features; Image.init(); \
pillow_heif.register_heif_opener(); assert features.check('avif'), 'Pillow without AVIF'; \
onnxruntime.InferenceSession; import tqdm, google.cloud.storage"

# --- final: what runs ------------------------------------------------------------------
FROM ${BASE_IMAGE}

LABEL org.opencontainers.image.title="penguin-api" \
      org.opencontainers.image.description="Tells which penguin species is in a photo." \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed, unprivileged uid: the same on every build, so volume permissions and
# runAsUser policies can name it.
ARG APP_UID=10001
RUN groupadd --gid "${APP_UID}" app \
 && useradd --uid "${APP_UID}" --gid app --no-create-home --home-dir /app \
        --shell /usr/sbin/nologin app

# PORT is what Cloud Run sets; 8080 is its default too. Logs go straight to stdout
# (Cloud Logging reads them line by line). Bytecode is compiled at build time below,
# and the app directory is read-only to the app user, so Python should not try to write it.
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORT=8080

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
COPY model/ model/
COPY gunicorn.conf.py ./
COPY penguin_api/ penguin_api/
# Precompiled bytecode saves the workers compiling every module at each cold start.
RUN python -m compileall -q penguin_api

USER ${APP_UID}:${APP_UID}
EXPOSE 8080

# Exec form: Gunicorn is PID 1 and receives Cloud Run's SIGTERM itself, finishing
# in-flight requests within gunicorn.conf.py's graceful_timeout.
CMD ["gunicorn", "-c", "gunicorn.conf.py", "penguin_api.wsgi:app"]
