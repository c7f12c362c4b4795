"""HTTP routes; each module is one APIRouter over the repositories."""
