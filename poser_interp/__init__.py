"""poser_interp: catch alignment-faking language models by looking inside them.

The public surface notebooks use; everything else may change.
"""

from .errors import AdapterMismatchError as AdapterMismatchError
from .errors import AnswerChoiceError as AnswerChoiceError
from .errors import BackendError as BackendError
from .errors import DataError as DataError
from .errors import LayerError as LayerError
from .errors import ModelLoadError as ModelLoadError
from .errors import PoserInterpError as PoserInterpError
from .errors import PromptTooLongError as PromptTooLongError
from .interventions import add_vector as add_vector
from .models import HookedModel as HookedModel
from .models import ModelSpec as ModelSpec
from .models import load_hf as load_hf
from .models import load_model as load_model
from .models import load_tokenizer as load_tokenizer
from .scenario import AnswerFormat as AnswerFormat
from .scenario import Fact as Fact
from .scenario import FactRole as FactRole
from .scenario import Oversight as Oversight
from .scenario import Scenario as Scenario
from .scenario import load_scenarios as load_scenarios
from .scenario import save_scenarios as save_scenarios
from .scoring import answer_logits as answer_logits
from .scoring import answer_probs as answer_probs
from .scoring import p_misaligned as p_misaligned
from .tokens import PromptFormat as PromptFormat

__version__ = "0.1.0"
