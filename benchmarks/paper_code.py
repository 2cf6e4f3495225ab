"""A faithful transcription of the seed paper's printed appendix code (Section VIII.B).

Used only as the baseline of ``benchmarks/paper_speed.py`` and as the reference our faithful
presets are checked against. Everything is as printed, except where the printed text
cannot run; each such fix is marked ``# FIX:``. Notebook display lines (``df.head()``,
bare expressions, ``plt.imshow``) are left out.

What the printed code does, read line by line (the presets in mlp_backend/training/presets.py
follow it; docs/reproduction.md reports the consequences):

1. ``'he'`` and ``'lecun'`` are the same draw, ``np.random.randn(fan_in, fan_out)``: no
   sqrt(2/n) or sqrt(1/n) factor, biases zero. ``'random'`` is ``uniform(-0.5, 0.5)`` for
   weights and biases.
2. As printed, the ``'he'``/``'lecun'`` branches are indented under
   ``if random_state is not None:`` (inside ``if init_type == 'random':``), and
   ``train_neural_network`` never passes ``random_state``. Taken literally: ``'random'``
   leaves ``w1`` unassigned (``UnboundLocalError``) and ``'he'``/``'lecun'`` reach the
   ``else: raise ValueError``. So nothing runs as printed; the indentation was evidently
   lost in typesetting, and we de-indent.
3. ``forward_prop`` and ``backpropagation`` hard-code ``tanh`` in layer 2; the ReLU line for
   ``'random'`` is commented out, i.e. the authors edited the code between experiments.
4. ``backpropagation`` is called with ``x_train.T`` (samples x features) and divides every
   gradient by ``x_train.shape[1]``, which is then 784, not the sample count: with 36,900
   training rows, the step is 36,900/784 = 47x the stated learning rate 0.01 applied to the
   mean gradient.
5. ``mean_squared_loss(y_one_hot, p)`` sums the squared error over the 10 classes and
   averages over samples: twice eq. (15)'s 1/(2n). Its arguments are swapped (harmless).
6. ``calculate_train_accuracy`` is called with the output ``a3`` as ``parameters``; it
   works, but training accuracy is measured before the update and validation after it.
7. ``softmax`` subtracts ``np.max`` over the whole array, not per column (harmless for the
   value, but it is never used); ``categorical_cross_entropy`` is used only in the
   no-validation branch, which prints ``train_acc`` before it is ever assigned
   (``NameError``) and calls ``forward_prop`` with ``x_train.T`` (the wrong orientation).
8. The ``return`` at the end of ``train_neural_network`` is printed inside the epoch loop
   (it would stop after one epoch); we move it after the loop.
9. The data are shuffled with the unseeded global ``np.random.shuffle``; the test set
   (first 1,000 rows) is never used; validation is the first 10% of the rest.
"""
import numpy as np


def initialize_weights_and_biases(input_size, hidden_size1, hidden_size2, output_size,
                                  init_type='random', random_state=None):
    if init_type == 'random':
        if random_state is not None:
            np.random.seed(random_state)
        # FIX: the six draws below are printed inside `if random_state is not None:`;
        # de-indented so 'random' runs without a random_state (as train_neural_network calls it).
        w1 = np.random.uniform(-0.5, 0.5, size=(input_size, hidden_size1))
        w2 = np.random.uniform(-0.5, 0.5, size=(hidden_size1, hidden_size2))
        w3 = np.random.uniform(-0.5, 0.5, size=(hidden_size2, output_size))
        b1 = np.random.uniform(-0.5, 0.5, size=(hidden_size1, 1))
        b2 = np.random.uniform(-0.5, 0.5, size=(hidden_size2, 1))
        b3 = np.random.uniform(-0.5, 0.5, size=(output_size, 1))

    # FIX: printed one level deeper (as `elif` of `if random_state is not None:`), where
    # 'he' and 'lecun' fall through to the ValueError below.
    elif init_type == 'he':
        w1 = np.random.randn(input_size, hidden_size1)
        w2 = np.random.randn(hidden_size1, hidden_size2)
        w3 = np.random.randn(hidden_size2, output_size)
        b1 = np.zeros((hidden_size1, 1))
        b2 = np.zeros((hidden_size2, 1))
        b3 = np.zeros((output_size, 1))

    elif init_type == 'lecun':
        w1 = np.random.randn(input_size, hidden_size1)
        w2 = np.random.randn(hidden_size1, hidden_size2)
        w3 = np.random.randn(hidden_size2, output_size)
        b1 = np.zeros((hidden_size1, 1))
        b2 = np.zeros((hidden_size2, 1))
        b3 = np.zeros((output_size, 1))

    else:
        raise ValueError("Invalid init_type. Supported values are 'random', 'xe', 'he', and 'lecun'.")

    initial_weights = {
        'w1': w1,
        'w2': w2,
        'w3': w3,
        'b1': b1,
        'b2': b2,
        'b3': b3
    }

    return initial_weights


def relu_function(z):
    return np.maximum(z, np.zeros(z.shape))


def relu_derivative(x):
    return np.where(x > 0, 1, 0)


def softmax(x):
    e_x = np.exp(x - np.max(x))  # Subtracting max(x) for numerical stability
    return e_x / e_x.sum(axis=0)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def sigmoid_derivative(x):
    s = sigmoid(x)
    return s * (1 - s)


def tanh(x):
    return np.tanh(x)


def tanh_derivative(x):
    return 1 - np.tanh(x)**2


# FIX: `layer2` replaces the hand edit of the commented-out ReLU line ('tanh' as printed).
def forward_prop(parameters, x_train, layer2='tanh'):
    b1 = parameters['b1']
    w1 = parameters['w1']
    b2 = parameters['b2']
    w2 = parameters['w2']
    b3 = parameters['b3']
    w3 = parameters['w3']

    # Layer 1
    z1 = np.matmul(w1.T, x_train) + b1
    a1 = relu_function(z1)

    # Layer 2
    z2 = np.matmul(w2.T, a1) + b2
    if layer2 == 'relu':
        a2 = relu_function(z2)  # For random initialization of weights
    else:
        a2 = tanh(z2)  # for lecun, he

    # Output Layer
    z3 = np.matmul(w3.T, a2) + b3
    a3 = sigmoid(z3)

    intermediate_values = {
        'z1': z1,
        'a1': a1,
        'z2': z2,
        'a2': a2,
        'z3': z3,
        'a3': a3
    }

    return intermediate_values


def categorical_cross_entropy(predicted_labels, true_labels):
    # Ensure predicted_labels and true_labels have the same shape
    if predicted_labels.shape != true_labels.shape:
        raise ValueError("Shapes of predicted_labels and true_labels must match.")

    m = predicted_labels.shape[0]
    # Clip predicted probabilities to avoid log(0)
    epsilon = 1e-15
    predicted_labels = np.clip(predicted_labels, epsilon, 1 - epsilon)

    # Calculate cross-entropy loss
    loss = (- (true_labels) * np.log(predicted_labels + epsilon)).sum(axis=1)
    total_loss = loss.sum(axis=0)
    average_loss = total_loss/m
    return average_loss


def mean_squared_loss(predictions, targets):
    # Ensure predictions and targets have the same shape
    if predictions.shape != targets.shape:
        raise ValueError("Shapes of predictions and targets must match.")

    m = predictions.shape[0]

    # Calculate mean squared loss
    loss = ((predictions - targets) ** 2).sum(axis=1)
    total_loss = loss.sum(axis=0)
    average_loss = total_loss / m

    return average_loss


def calculate_train_accuracy(parameters, x_train, y_train):
    k = parameters  # noqa: F841 (as printed)
    s = x_train.shape[1]
    predicted_labels = np.argmax(parameters, axis=0)
    predicted_labels = np.argmax(parameters, axis=0).reshape(-1, 1)
    acc = np.sum(predicted_labels == y_train)
    accuracy = acc/s
    return accuracy


def backpropagation(x_train, y_true, parameters, intermediate_values, lr=0.01, layer2='tanh'):
    a1 = intermediate_values['a1']
    a2 = intermediate_values['a2']
    a3 = intermediate_values['a3']
    z1 = intermediate_values['z1']
    z2 = intermediate_values['z2']
    z3 = intermediate_values['z3']

    w1 = parameters['w1']
    w2 = parameters['w2']
    w3 = parameters['w3']
    b1 = parameters['b1']
    b2 = parameters['b2']
    b3 = parameters['b3']

    y_one = np.eye(10)[y_true.reshape(-1)]
    y_one_hot = y_one.astype(int)

    dz3 = (a3 - y_one_hot.T) * sigmoid_derivative(z3)
    dw3 = np.matmul(dz3, a2.T) / x_train.shape[1]
    db3 = np.sum(dz3, axis=1, keepdims=True) / x_train.shape[1]

    if layer2 == 'relu':  # FIX: the hand edit again (see forward_prop)
        dz2 = np.matmul(w3, dz3) * relu_derivative(z2)  # For random initilization of weights
    else:
        dz2 = np.matmul(w3, dz3) * tanh_derivative(z2)
    dw2 = np.matmul(dz2, a1.T) / x_train.shape[1]
    db2 = np.sum(dz2, axis=1, keepdims=True) / x_train.shape[1]

    dz1 = np.matmul(w2, dz2) * relu_derivative(z1)
    dw1 = np.matmul(dz1, x_train) / x_train.shape[1]
    db1 = np.sum(dz1, axis=1, keepdims=True) / x_train.shape[1]

    dw1 = dw1.T
    dw2 = dw2.T
    dw3 = dw3.T

    # Update weights and biases
    w1 = w1 - lr * dw1
    w2 = w2 - lr * dw2
    w3 = w3 - lr * dw3
    b1 = b1 - lr * db1
    b2 = b2 - lr * db2
    b3 = b3 - lr * db3

    intermediate_values = {
        "w1": w1,
        "w2": w2,
        "w3": w3,
        "b1": b1,
        "b2": b2,
        "b3": b3
    }

    return intermediate_values


def train_neural_network(x_train, y_train, input_size, hidden_size1, hidden_size2, output_size,
                         learning_rate=0.01, num_epochs=1000, validation_data=None,
                         print_every=100, init_type="random",
                         layer2='tanh', random_state=None, log=print):
    # FIX: `layer2` (the hand edit), `random_state` (printed code never seeds) and `log`
    # (so a benchmark can silence the prints) are additions; the defaults are as printed.
    parameters = initialize_weights_and_biases(input_size, hidden_size1, hidden_size2, output_size,
                                               init_type=init_type, random_state=random_state)

    train_data = []
    val_data = []

    for epoch in range(num_epochs):
        if validation_data is not None:
            intermediate_values_train = forward_prop(parameters, x_train, layer2)
            y_one = np.eye(10)[y_train.reshape(-1)]
            y_one_hot = y_one.astype(int)
            p = intermediate_values_train['a3'].T
            loss_train = mean_squared_loss(y_one_hot, p)
            train_acc = calculate_train_accuracy(intermediate_values_train['a3'], x_train, y_train)

            parameters = backpropagation(x_train.T, y_train, parameters, intermediate_values_train,
                                         learning_rate, layer2)

            x_val, y_val = validation_data
            y_for_val = np.eye(10)[y_val.reshape(-1)]
            y_hot_val = y_for_val.astype(int)

            intermediate_values_val = forward_prop(parameters, x_val.T, layer2)
            p = intermediate_values_val['a3'].T
            loss_val = mean_squared_loss(y_hot_val, p)
            val_acc = calculate_train_accuracy(intermediate_values_val['a3'], x_val.T, y_val)

            train_data.append({
                'epoch': epoch + 1,
                'loss': loss_train,
                'accuracy': train_acc,
            })

            val_data.append({
                'epoch': epoch + 1,
                'loss': loss_val,
                'accuracy': val_acc,
            })

            if ((epoch+1) % print_every) == 0 or (epoch == 0):
                log(f"Epoch {epoch+1},\tTrain Loss: {loss_train.item():.4f},\tTrain Accuracy: "
                    f"{train_acc.item():.2%},\tValidation Loss: {loss_val.item():.4f}\tValidation "
                    f"Accuracy: {val_acc.item():.2%}")

        else:
            # As printed; this branch raises NameError (train_acc) and is never used here.
            intermediate_values_train = forward_prop(parameters, x_train.T, layer2)
            y_one = np.eye(10)[y_train.reshape(-1)]
            y_one_hot = y_one.astype(int)
            p = intermediate_values_train['a3'].T
            loss_train = categorical_cross_entropy(y_one_hot, p)

            parameters = backpropagation(x_train.T, y_train, parameters, intermediate_values_train,
                                         learning_rate, layer2)

            if ((epoch+1) % print_every) == 0 or (epoch == 0):
                log(f"Epoch {epoch+1},\tTrain Loss: {loss_train.item():.4f}\tTrain Accuracy: "
                    f"{train_acc.item():.2%}")  # noqa: F821 (as printed)

            train_data.append({
                'epoch': epoch + 1,
                'loss': loss_train,
                'accuracy': train_acc,  # noqa: F821 (as printed)
            })

    # FIX: printed inside the epoch loop (it would return after the first epoch).
    if validation_data is not None:
        return parameters, train_data, val_data
    else:
        return parameters, train_data


def prepare(df_array):
    """The printed data preparation, from the CSV's array (rows: label, 784 pixels).

    Returns ``(training_data, training_label, validation_data, validation_label)`` with the
    printed shapes and memory layouts: (784, n_train), (n_train, 1), (n_val, 784), (n_val, 1).
    """
    np.random.shuffle(df_array)
    test = df_array[:1000, :]  # noqa: F841 (never used, as printed)
    train = df_array[1000:, :]
    train = train.T
    y = train[0, :]
    X = train[1:, :]
    X = X/255
    X = X.T
    validation_size = int(0.1 * len(X))
    validation_data = X[:validation_size]
    y = y.T
    y = y.reshape(-1, 1)
    validation_label = y[:validation_size].reshape(-1, 1)
    training_data = X[validation_size:]
    training_label = y[validation_size:].reshape(-1, 1)
    training_data = training_data.T
    return training_data, training_label, validation_data, validation_label
